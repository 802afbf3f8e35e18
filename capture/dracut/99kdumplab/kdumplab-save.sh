#!/bin/sh
# kdumplab (dracut pre-pivot hook): save /proc/vmcore from the kdump kernel's initrd, then reboot.
[ -e /proc/vmcore ] || return 0
type info >/dev/null 2>&1 || . /lib/dracut-lib.sh
info "kdumplab: saving the crash dump"
PYTHONPATH=/usr/lib/kdumplab/site /usr/bin/python3 -m kdumplab.cli save --from-config
status=$?
[ "$status" -eq 0 ] || warn "kdumplab: save failed (exit status $status); rebooting"
sync
reboot -f
