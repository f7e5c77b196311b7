#!/usr/bin/env bash
# make e2e-install: the Debian packages proven on a Debian 12 system booted under QEMU (TCG) with systemd as PID 1.
# The root file system is made from Debian's packages with mmdebstrap (systemd, the kernel and its initramfs, and the
# packages' dependencies, so that the guest needs no network), cached in BUILD; each run copies it, puts
# dist/netswapd_*.deb and dist/netswap-client_*.deb and check.sh into the copy, and boots it. check.sh installs both
# packages with apt, checks the socket, a discovery probe starting the service, its user and sandbox, `netswapd status`,
# swap attached from it through the kernel's NBD client, then purges both and checks that nothing of ours is left.
# Exit 0 only when the guest printed "E2E-INSTALL: PASS".
#
#   tests/e2e-install/run.sh            E2E_INSTALL_BUILD=DIR (default tests/e2e-install/build), E2E_LOG_DIR=DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${E2E_INSTALL_BUILD:-$here/build}
for tool in mmdebstrap qemu-system-x86_64 mkfs.ext4 dpkg-parsechangelog; do
  command -v "$tool" >/dev/null || { echo "e2e-install: $tool missing (make test-deps installs it)" >&2; exit 1; }
done
version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)
server="$top/dist/netswapd_${version}_${arch}.deb"
client="$top/dist/netswap-client_${version}_${arch}.deb"
for deb in "$server" "$client"; do
  [ -s "$deb" ] || { echo "e2e-install: $deb missing (make deb)" >&2; exit 1; }
done

# The cached root: rebuilt when the package list or the recipe (RECIPE, bumped by hand with the hooks) changes.
packages="systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,kmod,procps,iproute2,adduser,libssl3,nbd-client"
stamp="$build/rootfs.stamp"
recipe=1
want="bookworm $packages recipe $recipe"
if [ ! -s "$build/rootfs.tar" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  mkdir -p "$build"
  started=$(date +%s)
  # A root password of none and a serial console; no network configuration (the checks use loopback only).
  mmdebstrap --variant=minbase --include="$packages" \
    --customize-hook='chroot "$1" passwd -d root' \
    --customize-hook='echo netswap-e2e > "$1/etc/hostname"' \
    bookworm "$build/rootfs.tmp.tar" http://deb.debian.org/debian
  mv "$build/rootfs.tmp.tar" "$build/rootfs.tar"
  echo "$want" > "$stamp"
  echo "e2e-install: root file system built in $(( $(date +%s) - started )) s"
fi

work=$(mktemp -d /tmp/netswap-e2e-install.XXXXXX)
cleanup() {
  if [ -n "${E2E_LOG_DIR:-}" ]; then
    mkdir -p "$E2E_LOG_DIR"
    cp "$work"/console.log "$E2E_LOG_DIR/console.log" 2>/dev/null || true
    cp "$work"/checks.log "$E2E_LOG_DIR/checks.log" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/root"
tar -xf "$build/rootfs.tar" -C "$work/root"
cp "$server" "$work/root/root/netswapd.deb"
cp "$client" "$work/root/root/netswap-client.deb"
install -m 0755 "$here/check.sh" "$work/root/root/check.sh"
cat > "$work/root/etc/systemd/system/e2e-install-check.service" <<'UNIT'
[Unit]
Description=NetSwap e2e-install checks
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/root/check.sh
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/e2e-install-check.service "$work/root/etc/systemd/system/multi-user.target.wants/e2e-install-check.service"
# The client package's trigger rebuilds the initramfs: with the modules this machine needs rather than "most" of them,
# as a lab image would be set up, which under software emulation is minutes shorter.
echo "MODULES=dep" > "$work/root/etc/initramfs-tools/conf.d/netswap-e2e"
# No login prompt on the console: nobody logs in, and getty's hangup of the line would cut off whoever writes to it.
ln -s /dev/null "$work/root/etc/systemd/system/serial-getty@ttyS0.service"
kernel=$(ls "$work"/root/boot/vmlinuz-* | head -n 1)
initrd=$(ls "$work"/root/boot/initrd.img-* | head -n 1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd"
mkfs.ext4 -q -F -L root -d "$work/root" "$work/root.img" 3G
rm -rf "$work/root"

started=$(date +%s)
timeout "${E2E_TIMEOUT:-900}" qemu-system-x86_64 -machine accel=tcg -m 1024 -smp 2 -nodefaults -no-user-config -display none \
  -serial "file:$work/console.log" -serial "file:$work/checks.log" -no-reboot \
  -kernel "$work/vmlinuz" -initrd "$work/initrd" \
  -drive "file=$work/root.img,if=virtio,format=raw" \
  -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=false" || true
elapsed=$(( $(date +%s) - started ))
tr -d '\r' < "$work/checks.log" | grep "E2E-INSTALL:" || true
if grep -q "E2E-INSTALL: PASS" "$work/checks.log"; then
  echo "e2e-install: PASS (guest booted, installed, checked, purged and powered off in $elapsed s)"
  exit 0
fi
echo "e2e-install: FAIL after $elapsed s; the checks' last lines, then the console's:"
tail -n 80 "$work/checks.log"
tail -n 40 "$work/console.log"
exit 1
