#!/bin/bash
# kdumplab dracut module: an initrd that saves /proc/vmcore without the root file system.
# Never included by default; build the kdump initrd with
#   dracut --add kdumplab /var/lib/kdumplab/initramfs-$(uname -r).img $(uname -r)
# and set initrd = "/var/lib/kdumplab/initramfs-<release>.img" in /etc/kdumplab/kdumplab.toml.
# Installed by `kdumplab install`, which fills in @PYTHON@ and @PYTHONPATH@.

check() {
    return 255  # only when asked for with --add
}

depends() {
    echo network
    return 0
}

install() {
    local python="@PYTHON@" stdlib dir pkg item
    inst_binary "$(readlink -f "$python")" /usr/bin/python3
    stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
    inst_dir "$stdlib"
    cp -a "$stdlib/." "${initdir}${stdlib}/"
    rm -rf "${initdir}${stdlib}/test" "${initdir}${stdlib}/idlelib" "${initdir}${stdlib}/tkinter"
    mkdir -p "${initdir}/usr/lib/kdumplab/site"
    local IFS=:
    for dir in @PYTHONPATH@; do
        for pkg in kdumplab numpy numpy.libs zstandard lzo cramjam tomli_w click; do
            for item in "$dir/$pkg" "$dir/$pkg".*.so; do
                [[ -e $item ]] && cp -a "$item" "${initdir}/usr/lib/kdumplab/site/"
            done
        done
    done
    unset IFS
    while read -r so; do
        inst_libdir_file "$so" 2>/dev/null
        inst_binary "$so" 2>/dev/null
    done < <(find "${initdir}/usr/lib/kdumplab/site" -name '*.so*' -type f)
    inst_simple /etc/kdumplab/kdumplab.toml
    inst_multiple -o ssh /root/.ssh/kdumplab_id_ed25519 /root/.ssh/known_hosts
    # pre-pivot: after the network is up, before the (unwanted) switch to the real root
    inst_hook pre-pivot 90 "$moddir/kdumplab-save.sh"
}
