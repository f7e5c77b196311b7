#!/usr/bin/env bash
# Builds the end-to-end guest from Debian packages into OUT (default tests/e2e/build): Debian 12's kernel (downloaded
# with apt-get download and unpacked, never installed), nbd.ko, e1000.ko, dm-crypt's and kernel TLS's modules, an initramfs with busybox-static,
# Debian's nbd-client and the libraries it links, and the static memtest workload. Reuses OUT when it is complete.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
mkdir -p "$out"
netswap=${NETSWAP_BIN:-$here/../../dist/netswap}
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ] && [ "$out/initrd.gz" -nt "$here/init.sh" ] && [ "$out/initrd.gz" -nt "$here/memtest.c" ] && [ "$out/initrd.gz" -nt "$0" ] \
   && { [ ! -e "$netswap" ] || [ "$out/initrd.gz" -nt "$netswap" ]; }; then
  echo "e2e guest: up to date in $out"
  exit 0
fi
for tool in qemu-system-x86_64 busybox nbd-client cryptsetup cpio gcc; do
  command -v "$tool" >/dev/null || { echo "e2e guest: $tool missing (make test-deps installs it)" >&2; exit 1; }
done
work=$(mktemp -d)

trap 'rm -rf "$work"' EXIT

# The kernel: the version linux-image-amd64 points at.
image=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
[ -n "$image" ] || { echo "e2e guest: cannot find the kernel package (apt-get update?)" >&2; exit 1; }
(cd "$work" && apt-get -o APT::Sandbox::User=root download "$image" >/dev/null)
dpkg -x "$work"/linux-image-*.deb "$work/kernel"
cp "$work"/kernel/boot/vmlinuz-* "$out/vmlinuz"
modules=$(echo "$work"/kernel/lib/modules/*)

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules,etc,tmp}
# Kernel TLS (the ktls scenario): the tls module and the AEADs it asks the crypto API for, AES-GCM and
# ChaCha20-Poly1305, with what they depend on (AES itself is built in). No modprobe in the guest: insmod in order.
for module in drivers/block/nbd.ko drivers/net/ethernet/intel/e1000/e1000.ko drivers/md/dm-mod.ko drivers/md/dm-crypt.ko crypto/xts.ko crypto/ecb.ko \
    crypto/gf128mul.ko crypto/ghash-generic.ko crypto/ctr.ko crypto/gcm.ko lib/crypto/libchacha.ko crypto/chacha_generic.ko \
    lib/crypto/libpoly1305.ko crypto/poly1305_generic.ko crypto/chacha20poly1305.ko net/tls/tls.ko; do
  src="$modules/kernel/$module"
  [ -f "$src" ] || src="$src.xz"
  case $src in *.xz) xz -dc "$src" > "$root/lib/modules/$(basename "${module}")" ;; *) cp "$src" "$root/lib/modules/" ;; esac
done
cp "$(command -v busybox)" "$root/bin/busybox"
file "$root/bin/busybox" | grep -q 'statically linked' || { echo "e2e guest: busybox must be busybox-static" >&2; exit 1; }
# nbd-client and cryptsetup (for --encrypt) with every shared library they need, at the same paths.
for tool in nbd-client cryptsetup; do
  path=$(command -v "$tool")
  cp "$path" "$root/bin/$tool"
  for lib in $(ldd "$path" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
gcc -static -O2 -o "$root/bin/memtest" "$here/memtest.c"
# The client under test: the statically linked native build (make dist), alone in a bare initramfs.
if [ -x "$netswap" ]; then
  file "$netswap" | grep -q 'statically linked' || { echo "e2e guest: $netswap is not statically linked" >&2; exit 1; }
  cp "$netswap" "$root/bin/netswap"
fi
install -m 0755 "$here/init.sh" "$root/init"
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.gz.tmp"
mv "$out/initrd.gz.tmp" "$out/initrd.gz"
echo "$image" > "$out/kernel-version"
echo "e2e guest: built $out ($image, initrd $(du -h "$out/initrd.gz" | cut -f1))"
