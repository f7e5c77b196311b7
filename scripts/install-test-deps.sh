#!/usr/bin/env bash
# Installs every Debian package the tests need. Idempotent: apt runs only when something is missing.
set -euo pipefail

packages=(
  qemu-utils          # qemu-io, qemu-img, qemu-nbd
  libnbd-bin          # nbdinfo, nbdsh, nbdcopy
  python3-libnbd      # the nbd module the nbdsh scripts import
  nbdkit              # peer server for bench/
  nbd-server          # peer server for bench/
  nbd-client          # the kernel client's userspace half (VM end-to-end test)
  fio                 # bench/
  systemd             # systemd-socket-activate
  iproute2            # network namespaces
  openssl             # TLS test certificates
  procps              # ps, pkill
  util-linux          # blkid, mount
  qemu-system-x86     # the end-to-end guest (TCG)
  busybox-static      # the guest's userland
  cpio                # the guest's initramfs
  gcc                 # the guest's static workload
  libc6-dev           # static libc for it
  libssl-dev          # libssl.a and libcrypto.a: the static client links OpenSSL in (netswap attach --tls)
  xz-utils            # compressed kernel modules
  file                # checks busybox is static
  python3             # JSON in the e2e script
  time                # GNU time: the client's peak memory
  cryptsetup-bin      # dm-crypt in the guest (netswap attach --encrypt)
  coreutils           # chroot
  groff-base          # renders the manual pages (ManPageTests)
  debhelper           # make deb (dpkg-buildpackage, dh)
  dpkg-dev            # dpkg-buildpackage, dpkg-parsechangelog
  lintian             # make deb checks the packages
  mmdebstrap          # the Debian 12 root the packages are installed into (DebianPackageTests)
  python3-seccomp     # tests/sandbox/unit-sandbox.py: the unit's system-call filter without systemd as PID 1
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "test dependencies: all installed"
  exit 0
fi
echo "test dependencies: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-test-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "test dependencies: installed"
