#!/usr/bin/env bash
# Installs the Debian packages kdumplab's tests and demo use: the oracles (makedumpfile, crash, drgn's needs),
# gcc for the synthetic mini kernel, liblzo2-dev for python-lzo, QEMU and friends for the real-kernel tests,
# sshd for the ssh target tests, chromium for the report test. Idempotent; skips what is installed.
set -euo pipefail
packages=(gcc make python3-venv python3-dev liblzo2-dev makedumpfile crash kexec-tools qemu-system-x86
          qemu-utils busybox-static cpio zstd openssh-server openssh-client chromium rsync file)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "kdumplab: need root to install: ${missing[*]} (or install them yourself)" >&2
  exit 1
fi
echo "kdumplab: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
