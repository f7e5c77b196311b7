#!/usr/bin/env bash
# What one 4 KiB buffered write costs a server on ext4 depending on how the image came into the page cache, with no
# NBD involved: fio's psync engine writes 4 KiB blocks at random offsets into a cached file, once after the file was
# written in 1 MiB blocks (as bench/run.sh writes its image: the kernel caches it in large folios, ext4 has them
# since Linux 6.16) and once after it was written in 4 KiB blocks (one page per folio). docs/performance.md uses it
# to explain the 4 KiB write rows on disk.
#
#   bench/folios.sh [DIR]        DIR: a directory on the filesystem to measure (default /var/tmp)
set -euo pipefail
dir=${1:-/var/tmp}
SIZE_MB=${SIZE_MB:-1024}
RUNTIME=${RUNTIME:-5}
command -v fio >/dev/null || { echo "folios: fio missing (make test-deps installs it)" >&2; exit 1; }
file=$(mktemp "$dir/netswap-folios.XXXXXX")
out=$(mktemp /tmp/netswap-folios.XXXXXX)
trap 'rm -f "$file" "$out"' EXIT
echo "folios: $(uname -r), $(findmnt -n -o FSTYPE --target "$dir" | tail -n 1) at $dir, ${SIZE_MB} MiB file"
for bs in 1M 4k; do
  case $bs in 1M) count=$SIZE_MB ;; 4k) count=$((SIZE_MB * 256)) ;; esac
  dd if=/dev/urandom of="$file" bs=$bs count="$count" status=none
  # invalidate=0: fio would otherwise drop the file's cached pages first, and the cache is what is measured.
  fio --name=folios --filename="$file" --invalidate=0 --ioengine=psync --rw=randwrite --bs=4k --size="${SIZE_MB}M" \
      --time_based --runtime="$RUNTIME" --output-format=json --output="$out" >/dev/null
  /usr/bin/python3 - "$out" "$bs" <<'PYEOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
print(f"folios: written in {sys.argv[2]} blocks: {job['write']['iops']:,.0f} random 4 KiB writes/s, "
      f"{job['write']['lat_ns']['mean'] / 1000:.1f} µs each")
PYEOF
done
