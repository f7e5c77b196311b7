#!/usr/bin/env bash
# Swap-shaped load, side by side: CLIENTS clients at once, each on a private swap area of its own — netswapd's
# `swap/cN` exports, nbdkit's tmpdisk plugin (a fresh temporary disk per connection) — each doing 4 KiB random reads
# and 128 KiB random writes (half each, queue depth 2, as a swapping kernel does), for RUNTIME seconds, ROUNDS rounds.
# Both keep their areas on the same tmpfs. Prints a Markdown table: total throughput and the p99 latency of each side.
#
#   bench/swapload.sh                      200 clients, 16 MiB each, 3 rounds of 10 s
#   CLIENTS=50 RUNTIME=5 bench/swapload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-200}
SIZE_MB=${SIZE_MB:-16}
RUNTIME=${RUNTIME:-10}
ROUNDS=${ROUNDS:-3}
. bench/lib.sh
bench_require swapload fio nbdkit
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/netswap-swapload.XXXXXX)
area=/dev/shm/netswap-swapload
mkdir -p "$area/netswapd" "$area/nbdkit"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" "$area"
}
trap cleanup EXIT

"$NETSWAPD" --listen 127.0.0.1:19582 --swap-dir "$area/netswapd" --swap-allocation sparse --swap-max-size 1G \
  --max-clients 0 --max-clients-per-address 0 --connection-rate 0 -q 2>"$work/netswapd.log" &
pids+=($!)
TMPDIR="$area/nbdkit" nbdkit -f -p 19583 -i 127.0.0.1 tmpdisk size="${SIZE_MB}M" 2>"$work/nbdkit.log" &
pids+=($!)
wait_port 19582 19583

jobfile() {   # server port
  echo "[global]"
  echo "ioengine=nbd"
  echo "rw=randrw"
  echo "rwmixread=50"
  echo "bs=4k,128k"
  echo "iodepth=2"
  echo "size=${SIZE_MB}m"
  echo "runtime=$RUNTIME"
  echo "time_based=1"
  echo "ramp_time=1"
  echo "group_reporting=1"
  echo "thread=1"
  for i in $(seq 1 "$CLIENTS"); do
    echo "[c$i]"
    if [ "$1" = netswapd ]; then echo "uri=nbd://127.0.0.1:$2/swap/c$i:${SIZE_MB}M"; else echo "uri=nbd://127.0.0.1:$2/"; fi
  done
}

results="$work/results.tsv"
for round in $(seq 1 "$ROUNDS"); do
  for server in netswapd nbdkit; do
    port=$([ "$server" = netswapd ] && echo 19582 || echo 19583)
    jobfile "$server" "$port" > "$work/$server.fio"
    echo "swapload: round $round $server ($CLIENTS clients)" >&2
    fio --output-format=json --output="$work/$server-$round.json" "$work/$server.fio" >/dev/null 2>"$work/fio.err" || { cat "$work/fio.err" "$work/$server-$round.json" >&2; exit 1; }
    "$PY" - "$work/$server-$round.json" "$server" >>"$results" <<'PYEOF'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]   # fio's nbd engine prints "connected" lines before the JSON
r, w = job["read"], job["write"]
p99r = r["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000
p99w = w["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000
mib = (r["bw_bytes"] + w["bw_bytes"]) / 1048576
print(f"{sys.argv[2]}\t{mib:.1f}\t{r['iops']:.0f}\t{w['iops']:.0f}\t{p99r:.0f}\t{p99w:.0f}")
PYEOF
  done
done

"$PY" - "$results" "$CLIENTS" "$SIZE_MB" "$RUNTIME" "$ROUNDS" <<'PYEOF'
import statistics, sys
path, clients, size, runtime, rounds = sys.argv[1:]
rows = {}
for line in open(path):
    server, *values = line.split("\t")
    rows.setdefault(server, []).append([float(v) for v in values])
med = {s: [statistics.median(col) for col in zip(*v)] for s, v in rows.items()}
base = med["nbdkit"]
print(f"{clients} clients, {size} MiB each, 4 KiB random reads and 128 KiB random writes (half each, queue depth 2), "
      f"{runtime} s, median of {rounds} rounds:\n")
print("| server | MiB/s | read IOPS | write IOPS | read p99 µs | write p99 µs | MiB/s vs nbdkit | read p99 vs nbdkit |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for s in ("netswapd", "nbdkit"):
    m = med[s]
    print(f"| {s} | {m[0]:,.1f} | {m[1]:,.0f} | {m[2]:,.0f} | {m[3]:,.0f} | {m[4]:,.0f} | {m[0] / base[0]:.2f} | {m[3] / base[3]:.2f} |")
PYEOF
