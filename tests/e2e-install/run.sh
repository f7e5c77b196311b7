#!/usr/bin/env bash
# make e2e-install: the Debian packages proven on Debian 12 systems booted under QEMU (TCG). The root file system is made
# from Debian's packages with mmdebstrap (systemd, the kernel and initramfs-tools, and the packages' dependencies, so
# that no guest needs the network for packages), cached in BUILD. Two guests, one after the other:
#
#   server  the root booted with systemd as PID 1 (1 GiB): check.sh installs both packages with apt, checks the socket,
#           a discovery probe starting the service, its user and sandbox, `netswapd status`, swap attached from it
#           through the kernel's NBD client, then purges both and checks that nothing of ours is left. Its initramfs is
#           not rebuilt there (update_initramfs=no): the client guest proves that, and under TCG it costs 5 minutes.
#   client  the 32 MiB client of tests/e2e as a lab image would make it: the client package installed with apt into a
#           copy of the root (natively, in a chroot), whose trigger builds the initramfs with update-initramfs and the
#           package's hook; the guest boots that initramfs with `ip=` on
#           its command line and client.conf as shipped, so the package's init-premount script attaches swap by
#           discovery from netswapd on the host (in a network namespace of its own) before the root file system;
#           then the workload of tests/e2e runs (it locks all but 32 MiB of the memory available, then fills twice
#           that, every page verified) and swap is detached. The guest has 256 MiB, not tests/e2e's 128: nbd-client's
#           own initramfs hook adds every network driver (`auto_add_modules net`), and its 24 MB initramfs, 73 MiB
#           unpacked, does not fit 128 MiB while the kernel unpacks it (it panicked "deadlocked on memory").
#
#   client-tls  the same client with TLS=require in client.conf and its TLS credentials in /etc/netswap/tls/client
#           (update-initramfs run again after they are in): the hook puts the kernel TLS modules and the credentials
#           into the initramfs, and the init-premount script's `netswap attach --auto` swaps over kernel TLS from
#           netswapd --tls require --tls-verify-client.
#
#   tests/e2e-install/run.sh [all|server|client|client-tls]    E2E_INSTALL_BUILD=DIR (default tests/e2e-install/build),
#                                                   E2E_LOG_DIR=DIR (keep the consoles and logs)
# Exit 0 only when every part asked for passed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
part=${1:-all}
case $part in all|server|client|client-tls) ;; *) echo "e2e-install: unknown part '$part' (all, server, client or client-tls)" >&2; exit 2 ;; esac
build=${E2E_INSTALL_BUILD:-$here/build}
for tool in mmdebstrap qemu-system-x86_64 mkfs.ext4 dpkg-parsechangelog gcc ip; do
  command -v "$tool" >/dev/null || { echo "e2e-install: $tool missing (make test-deps installs it)" >&2; exit 1; }
done
version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)
server="$top/dist/netswapd_${version}_${arch}.deb"
client="$top/dist/netswap-client_${version}_${arch}.deb"
for deb in "$server" "$client"; do
  [ -s "$deb" ] || { echo "e2e-install: $deb missing (make deb)" >&2; exit 1; }
done
# shellcheck source=../e2e/lan.sh
. "$top/tests/e2e/lan.sh"
[ -x "$top/dist/netswapd" ] || { echo "e2e-install: $top/dist/netswapd missing (make dist)" >&2; exit 1; }

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
server_pid=""
ns=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  for mount in "$work/client/proc" "$work/swap"; do umount -l "$mount" 2>/dev/null || true; done
  if [ -n "${E2E_LOG_DIR:-}" ]; then
    mkdir -p "$E2E_LOG_DIR"
    cp "$work"/*.log "$work"/*.list "$E2E_LOG_DIR/" 2>/dev/null || true
  fi
  rm -rf "$work"
  [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
failed=0

run_server() {
  local root="$work/server"
  mkdir "$root"
  tar -xf "$build/rootfs.tar" -C "$root"
  cp "$server" "$root/root/netswapd.deb"
  cp "$client" "$root/root/netswap-client.deb"
  install -m 0755 "$here/check.sh" "$root/root/check.sh"
  cat > "$root/etc/systemd/system/e2e-install-check.service" <<'UNIT'
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
  ln -s /etc/systemd/system/e2e-install-check.service "$root/etc/systemd/system/multi-user.target.wants/e2e-install-check.service"
  # The client package's trigger would rebuild this guest's initramfs: the client part proves that, natively.
  sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$root/etc/initramfs-tools/update-initramfs.conf"
  # No login prompt on the console: nobody logs in, and getty's hangup of the line would cut off whoever writes to it.
  ln -s /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
  cp "$(ls "$root"/boot/vmlinuz-* | head -n 1)" "$work/server-vmlinuz"
  cp "$(ls "$root"/boot/initrd.img-* | head -n 1)" "$work/server-initrd"
  mkfs.ext4 -q -F -L root -d "$root" "$work/server.img" 3G
  rm -rf "$root"

  local started elapsed
  started=$(date +%s)
  timeout "${E2E_TIMEOUT:-900}" qemu-system-x86_64 -machine accel=tcg -m 1024 -smp 2 -nodefaults -no-user-config -display none \
    -serial "file:$work/server-console.log" -serial "file:$work/server-checks.log" -no-reboot \
    -kernel "$work/server-vmlinuz" -initrd "$work/server-initrd" \
    -drive "file=$work/server.img,if=virtio,format=raw" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=false" || true
  elapsed=$(( $(date +%s) - started ))
  rm -f "$work/server.img"
  tr -d '\r' < "$work/server-checks.log" | grep "E2E-INSTALL:" || true
  if grep -q "E2E-INSTALL: PASS" "$work/server-checks.log"; then
    echo "e2e-install server: PASS (booted, installed, checked, purged and powered off in $elapsed s)"
    return 0
  fi
  echo "e2e-install server: FAIL after $elapsed s; the checks' last lines, then the console's:"
  tail -n 80 "$work/server-checks.log"
  tail -n 40 "$work/server-console.log"
  return 1
}

run_client() {
  local tls=${1:-}
  local root="$work/client" started elapsed name=client${tls:+-tls}
  rm -rf "$root"
  mkdir "$root"
  # What an earlier client run left: its LAN and its server's tmpfs.
  [ -n "$ns" ] && { ip netns del "$ns" 2>/dev/null || true; ns=""; }
  umount -l "$work/swap" 2>/dev/null || true
  tar -xf "$build/rootfs.tar" -C "$root"
  # A lab image for machines this small carries the modules it needs, not "most" of them (a 39 MB initramfs that a
  # 128 MiB machine cannot unpack): the network card, the root disk and its file system. The hook adds nbd.
  echo "MODULES=list" > "$root/etc/initramfs-tools/conf.d/netswap-e2e"
  printf '%s\n' e1000 virtio_pci virtio_blk ext4 >> "$root/etc/initramfs-tools/modules"
  cp "$client" "$root/root/netswap-client.deb"
  mount -t proc proc "$root/proc"
  started=$(date +%s)
  # The image is made as an administrator would: apt installs the package, whose trigger runs update-initramfs.
  if ! chroot "$root" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      apt-get -o Dpkg::Use-Pty=0 install -y --no-install-recommends /root/netswap-client.deb > "$work/$name-apt.log" 2>&1; then
    cat "$work/$name-apt.log"; echo "e2e-install $name: FAIL: apt could not install the client package in the image"
    umount "$root/proc"; return 1
  fi
  if [ -n "$tls" ]; then
    # The site's credentials for this machine, as an administrator copies them in, and TLS on in client.conf; then
    # the initramfs again, as update-initramfs -u after a configuration change.
    "$top/scripts/netswap-make-certs" "$work/certs" --server-name netswap-e2e --client netswap-client >/dev/null
    mkdir -p "$root/etc/netswap/tls/client"
    cp "$work/certs/clients/netswap-client/"*.pem "$root/etc/netswap/tls/client/"
    chmod 0600 "$root/etc/netswap/tls/client/client-key.pem"
    echo "TLS=require" >> "$root/etc/netswap/client.conf"
    chroot "$root" env PATH=/usr/sbin:/usr/bin:/sbin:/bin update-initramfs -u >> "$work/$name-apt.log" 2>&1 \
      || { cat "$work/$name-apt.log"; echo "e2e-install $name: FAIL: update-initramfs -u"; umount "$root/proc"; return 1; }
  fi
  grep "update-initramfs\|netswap:" "$work/$name-apt.log" || true
  chroot "$root" lsinitramfs "$(cd "$root" && ls boot/initrd.img-* | head -n 1 | sed 's|^|/|')" > "$work/$name-initramfs.list"
  umount "$root/proc"
  for file in usr/bin/netswap usr/sbin/nbd-client scripts/init-premount/netswap etc/netswap/client.conf; do
    grep -q "/$file\$\|^$file\$" "$work/$name-initramfs.list" \
      || { echo "e2e-install $name: FAIL: the initramfs update-initramfs built has no $file"; return 1; }
  done
  grep -q "/nbd.ko" "$work/$name-initramfs.list" || { echo "e2e-install $name: FAIL: the initramfs has no nbd module"; return 1; }
  if [ -n "$tls" ]; then
    for file in /tls.ko /chacha20poly1305.ko /chacha_generic.ko /poly1305_generic.ko /gcm.ko etc/netswap/tls/client/client-key.pem etc/netswap/tls/client/ca-cert.pem; do
      grep -q "$file" "$work/$name-initramfs.list" || { echo "e2e-install $name: FAIL: the initramfs has no $file"; return 1; }
    done
  fi
  echo "e2e-install $name: image made and its initramfs built by update-initramfs in $(( $(date +%s) - started )) s" \
    "($(du -h "$(ls "$root"/boot/initrd.img-* | head -n 1)" | cut -f1))"
  gcc -static -O2 -o "$root/root/memtest" "$top/tests/e2e/memtest.c"
  install -m 0755 "$here/client-init.sh" "$root/root/client-init"
  cp "$(ls "$root"/boot/vmlinuz-* | head -n 1)" "$work/client-vmlinuz"
  cp "$(ls "$root"/boot/initrd.img-* | head -n 1)" "$work/client-initrd"
  mkfs.ext4 -q -F -L root -d "$root" "$work/client.img" 3G
  rm -rf "$root"

  # The lab: a network namespace with a bridge (the server's side, 10.254.0.1) and the guest's tap on it, as in tests/e2e.
  ns="netswap-e2e-install-$$"
  e2e_lan_up "$ns"
  mkdir -p "$work/swap"
  mount -t tmpfs -o size=512M,mode=0700 tmpfs "$work/swap"
  local tls_server=()
  [ -n "$tls" ] && tls_server=(--tls require --tls-certificates "$work/certs/server" --tls-verify-client)
  ip netns exec "$ns" "$top/dist/netswapd" --listen 10.254.0.1:9572 --swap-dir "$work/swap" --swap-size 128M --swap-grace 30s \
    --control-socket "$work/control.sock" --discovery on -v "${tls_server[@]}" > "$work/$name-netswapd.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 200); do grep -q "netswapd ready" "$work/$name-netswapd.log" && break; sleep 0.05; done
  grep -q "netswapd ready" "$work/$name-netswapd.log" || { cat "$work/$name-netswapd.log"; echo "e2e-install $name: FAIL: netswapd did not start"; return 1; }

  started=$(date +%s)
  # net.ifnames=0: the kernel's eth0, which ip= names. No netswap= on the command line: client.conf as shipped
  # (SWAP=auto below 1G of memory) asks for swap on a machine that boots from the network (ip=).
  timeout "${E2E_TIMEOUT:-600}" ip netns exec "$ns" qemu-system-x86_64 -machine accel=tcg -m 256 -smp 1 -nodefaults -no-user-config \
    -display none -serial "file:$work/$name-console.log" -no-reboot \
    -kernel "$work/client-vmlinuz" -initrd "$work/client-initrd" \
    -drive "file=$work/client.img,if=virtio,format=raw" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device e1000,netdev=n0 \
    -append "root=/dev/vda ro console=ttyS0 panic=-1 loglevel=4 net.ifnames=0 ip=10.254.0.15::10.254.0.1:255.255.255.0:netswap-client:eth0:off init=/root/client-init" || true
  elapsed=$(( $(date +%s) - started ))
  rm -f "$work/client.img"
  sleep 1
  local areas used
  areas=$("$top/dist/netswapd" status --json --control-socket "$work/control.sock" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["swap"]["areas"]))')
  used=$(df --output=used -B1 "$work/swap" | tail -1 | tr -d ' ')
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  tr -d '\r' < "$work/$name-console.log" | grep "NETSWAP-E2E\|MEMTEST\|memtest:\|netswap" || true
  grep "TLS established" "$work/$name-netswapd.log" || true
  local tls_ok=yes
  [ -n "$tls" ] && { grep -q "TLS established" "$work/$name-netswapd.log" && grep -q "kernel TLS): no process relays its data" "$work/$name-console.log" || tls_ok=no; }
  if grep -q "NETSWAP-E2E: VERDICT PASS" "$work/$name-console.log" && grep -q "MEMTEST PASS" "$work/$name-console.log" \
     && grep -q "NETSWAP-E2E: swap on before init" "$work/$name-console.log" && [ "$tls_ok" = yes ] \
     && grep -q "created" "$work/$name-netswapd.log" && [ "$areas" = 0 ] && [ "$used" = 0 ]; then
    echo "e2e-install $name: PASS in $elapsed s (boot, attach from the initramfs by discovery${tls:+ over kernel TLS}, workload, detach); server areas after power-off: $areas, bytes: $used"
    return 0
  fi
  echo "e2e-install $name: FAIL after $elapsed s; server areas after power-off: $areas, bytes: $used"
  echo "---- guest console ----"; tail -n 120 "$work/$name-console.log"
  echo "---- netswapd log ----"; tail -n 40 "$work/$name-netswapd.log"
  return 1
}

if [ "$part" = all ] || [ "$part" = server ]; then run_server || failed=1; fi
if [ "$part" = all ] || [ "$part" = client ]; then run_client || failed=1; fi
if [ "$part" = all ] || [ "$part" = client-tls ]; then run_client tls || failed=1; fi
[ "$failed" = 0 ] && echo "e2e-install: PASS ($part)" || echo "e2e-install: FAIL ($part)"
exit "$failed"
