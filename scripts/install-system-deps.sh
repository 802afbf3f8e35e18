#!/usr/bin/env bash
# Installs the Debian packages kdumplab's tests and demo use: the oracles (makedumpfile, crash, drgn's needs),
# gcc for the synthetic mini kernel, liblzo2-dev for python-lzo, QEMU and friends for the real-kernel tests,
# sshd for the ssh target tests, chromium for the report test, mmdebstrap and e2fsprogs (mkfs.ext4 -d, debugfs)
# for the installed-system images. Idempotent; skips what is installed.
set -euo pipefail
packages=(gcc make python3-venv python3-dev liblzo2-dev makedumpfile crash kexec-tools qemu-system-x86
          qemu-utils busybox-static cpio zstd openssh-server openssh-client chromium rsync file
          qemu-system-arm qemu-user-static binfmt-support mmdebstrap arch-test e2fsprogs)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# arm64 guests' userland is built with mmdebstrap, whose maintainer scripts run under qemu-user: binfmt_misc must
# be mounted and the aarch64 handler enabled (a container may start without either).
enable_binfmt() {
  [ "$(id -u)" -eq 0 ] || return 0
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
}
if [ ${#missing[@]} -eq 0 ]; then enable_binfmt; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "kdumplab: need root to install: ${missing[*]} (or install them yourself)" >&2
  exit 1
fi
echo "kdumplab: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
enable_binfmt
