#!/usr/bin/env bash
# Where is the client the limit? fio's nbd engine (one thread) drives, in turn and round after round, netswapd and
# nbdkit's file plugin serving one image on tmpfs, and nbdkit's null plugin, which does no storage work at all (reads
# return zeros, writes are dropped). For each it reports the median IOPS, fio's own CPU (% of one core) and fio's CPU
# per request. Where fio is near 100 % of a core, the rate is what fio's CPU per request against that server allows,
# however fast the server answers. docs/performance.md uses it for the rows under 1.2× nbdkit.
#
#   bench/ceiling.sh                     the queue-depth-16, 128 KiB and 64 KiB workloads, 5 rounds of 5 s
#   ROUNDS=3 RUNTIME=3 bench/ceiling.sh  shorter
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
RUNTIME=${RUNTIME:-5}
SIZE_MB=${SIZE_MB:-1024}
. bench/lib.sh
bench_require ceiling fio nbdkit

work=$(mktemp -d /tmp/netswap-ceiling.XXXXXX)
image=/dev/shm/netswap-ceiling.img
pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work" "$image"' EXIT

dd if=/dev/urandom of="$image" bs=1M count="$SIZE_MB" status=none
"$NETSWAPD" --listen 127.0.0.1:19582 --export "bench=$image" -q 2>"$work/netswapd.log" & pids+=($!)
nbdkit -f -p 19583 -i 127.0.0.1 file "$image" 2>"$work/nbdkit-file.log" & pids+=($!)
nbdkit -f -p 19584 -i 127.0.0.1 null size="${SIZE_MB}M" 2>"$work/nbdkit-null.log" & pids+=($!)
wait_port 19582 19583 19584

for round in $(seq 1 "$ROUNDS"); do
  for w in "4k-randread-qd16 randread 4k 16" "4k-randwrite-qd16 randwrite 4k 16" "128k-seqwrite-qd8 write 128k 8" \
           "64k-randread-qd4 randread 64k 4"; do
    read -r name rw bs depth <<<"$w"
    for target in netswapd:19582 nbdkit-file:19583 nbdkit-null:19584; do
      echo "ceiling: round $round $name ${target%%:*}" >&2
      fio --name="$name" --ioengine=nbd --uri="nbd://127.0.0.1:${target##*:}/bench" --rw="$rw" --bs="$bs" \
          --iodepth="$depth" --runtime="$RUNTIME" --time_based --ramp_time=1 --output-format=json \
          --output="$work/$round+$name+${target%%:*}.json" >/dev/null
    done
  done
done

"$PY" - "$work" "$ROUNDS" "$RUNTIME" <<'PYEOF'
import glob, json, os, statistics, sys
work, rounds, runtime = sys.argv[1:]
rows = {}
for path in sorted(glob.glob(os.path.join(work, "*.json"))):
    _, name, server = os.path.basename(path)[:-len(".json")].split("+")
    job = json.load(open(path))["jobs"][0]
    side = job["write"] if job["write"]["io_bytes"] > job["read"]["io_bytes"] else job["read"]
    cpu = job["usr_cpu"] + job["sys_cpu"]
    rows.setdefault((name, server), []).append((side["iops"], cpu, cpu * 1e4 / side["iops"]))
print(f"fio against each server in turn, image on tmpfs, {rounds} rounds of {runtime} s, medians.\n")
print("| workload | server | IOPS | IOPS vs nbdkit file | fio CPU % | fio CPU µs/request |")
print("|---|---|---:|---:|---:|---:|")
for name in dict.fromkeys(k[0] for k in rows):
    base = statistics.median(r[0] for r in rows[(name, "nbdkit-file")])
    for server in ("netswapd", "nbdkit-file", "nbdkit-null"):
        iops, cpu, us = (statistics.median(r[i] for r in rows[(name, server)]) for i in range(3))
        print(f"| {name} | {server} | {iops:,.0f} | {iops / base:.2f} | {cpu:.0f} | {us:.1f} |")
PYEOF
