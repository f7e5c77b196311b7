#!/usr/bin/env bash
# Swap load at scale, side by side: netswapd's swap areas against nbdkit's tmpdisk plugin (a fresh sparse file per
# connection, made by `truncate`), both on the same tmpfs. bench/swapgen (C, built here) is the load: one TCP
# connection per client negotiated as the kernel's NBD driver does (simple replies), many clients per thread, so it
# reaches a thousand clients and more, where fio's nbd engine needs a thread or a process per client.
#
# Shapes:
#   swap   each client first writes its whole region (not measured), then 70 % 4 KiB reads of written pages and 30 %
#          128 KiB writes in bursts of 4, never FUA: a swapping kernel
#   holes  70 % 4 KiB reads anywhere in a 256 MiB region (mostly never written) and 30 % 128 KiB writes
# Each run starts its server afresh; which server goes first alternates from round to round. Before the first run,
# WARM_MB of tmpfs is written once and removed: in a virtual machine the first write to a page of guest memory costs
# the host a fault (here: 68 % of netswapd's samples in the copy into fresh tmpfs pages, in a holes run on a new VM),
# and whichever server ran first would pay it for the other. Reported per row: total MiB/s, read IOPS, read p99, the
# server's CPU time per request and its resident memory (and its growth per connected client).
#
#   bench/swapscale.sh                         shapes swap and holes at 50, 200 and 1,000 clients, 2 rounds of 10 s
#   COUNTS="200" SHAPES=holes ROUNDS=3 bench/swapscale.sh
#   TENK=1 bench/swapscale.sh                  10,000 clients (TENK_CLIENTS), one request a second each (netswapd,
#                                              then nbdkit); netswapd holds two descriptors per swap client (socket
#                                              and area), so the open-files limit must allow twice the clients
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPES=${SHAPES:-"swap holes"}
COUNTS=${COUNTS:-"50 200 1000"}
RUNTIME=${RUNTIME:-10}
ROUNDS=${ROUNDS:-2}
DEPTH=${DEPTH:-4}
THREADS=${THREADS:-2}
WARM_MB=${WARM_MB:-$(awk '/MemAvailable/ { print int($2 / 1024 * 0.7) }' /proc/meminfo)}
. bench/lib.sh
bench_require swapscale gcc nbdkit
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/netswap-swapscale.XXXXXX)
area=/dev/shm/netswap-swapscale
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" "$area"
}
trap cleanup EXIT
gcc -O2 -Wall -Wextra -o "$work/swapgen" bench/swapgen.c -lpthread
mkdir -p "$area"
echo "swapscale: touching $WARM_MB MiB of memory once" >&2
dd if=/dev/zero of="$area/warm" bs=1M count="$WARM_MB" status=none
rm -f "$area/warm"

# start SERVER SIZE_MB: starts it on its port with an empty area directory; sets $server_pid.
start() {
  rm -rf "${area:?}/$1" && mkdir -p "$area/$1"
  if [ "$1" = netswapd ]; then
    "$NETSWAPD" --listen 127.0.0.1:19592 --swap-dir "$area/netswapd" --swap-allocation sparse --swap-max-size 1G \
      --max-clients 0 --max-clients-per-address 0 --connection-rate 0 -q 2>"$work/netswapd.log" &
  else
    # shellcheck disable=SC2016 # $size and $disk are nbdkit's, expanded by its shell
    TMPDIR="$area/nbdkit" nbdkit -f -p 19593 -i 127.0.0.1 tmpdisk size="$2M" command='truncate -s $size "$disk"' \
      2>"$work/nbdkit.log" &
  fi
  server_pid=$!
  pids+=("$server_pid")
  wait_port "$([ "$1" = netswapd ] && echo 19592 || echo 19593)"
}

stop() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}

# run SERVER SHAPE CLIENTS SIZE_MB [RATE]: one swapgen run; prints its line prefixed by server, shape and clients.
run() {
  local server=$1 shape=$2 clients=$3 size=$4 rate=${5:-0} port export
  start "$server" "$size"
  if [ "$server" = netswapd ]; then port=19592 export="swap/c%d:${size}M"; else port=19593 export=""; fi
  echo "swapscale: $shape, $clients clients, $server" >&2
  local line
  if ! line=$("$work/swapgen" --port "$port" --clients "$clients" --export "$export" --shape "$shape" --size-mb "$size" \
      --depth "$DEPTH" --runtime "$RUNTIME" --threads "$THREADS" --rate "$rate" --pid "$server_pid" 2>"$work/swapgen.err"); then
    echo "swapscale: $server failed: $(tail -1 "$work/swapgen.err")" >&2
    line="failed=$(tail -1 "$work/swapgen.err" | tr '\t' ' ')"
  fi
  stop
  printf '%s\t%s\t%s\t%s\n' "$server" "$shape" "$clients" "$line"
}

results="$work/results.tsv"
if [ -n "${TENK:-}" ]; then
  for server in netswapd nbdkit; do run "$server" holes "${TENK_CLIENTS:-10000}" 16 1 >>"$results"; done
else
  for shape in $SHAPES; do
    for clients in $COUNTS; do
      if [ "$shape" = swap ]; then size=$(( 4096 / clients < 16 ? 4096 / clients : 16 )); else size=256; fi
      for round in $(seq 1 "$ROUNDS"); do
        order="netswapd nbdkit"
        [ $((round % 2)) -eq 0 ] && order="nbdkit netswapd"
        for server in $order; do run "$server" "$shape" "$clients" "$size" >>"$results"; done
      done
    done
  done
fi

"$PY" - "$results" "$RUNTIME" "$ROUNDS" "$DEPTH" <<'PYEOF'
import statistics, sys
path, runtime, rounds, depth = sys.argv[1:]
runs = {}
for line in open(path):
    server, shape, clients, rest = line.rstrip("\n").split("\t", 3)
    fields = dict(kv.split("=", 1) for kv in rest.split("\t") if "=" in kv)
    runs.setdefault((shape, int(clients)), {}).setdefault(server, []).append(fields)
print(f"Queue depth {depth} per client, {runtime} s measured per run, median of {rounds} runs per server (servers alternating):\n")
print("| shape | clients | server | MiB/s | read IOPS | read p99 µs | server CPU µs/request | server RSS MiB | KiB per client | MiB/s vs nbdkit | read p99 vs nbdkit |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
def med(rows, key):
    values = [float(r[key]) for r in rows if key in r]
    return statistics.median(values) if values else None
for (shape, clients), servers in sorted(runs.items()):
    table = {}
    for server in ("netswapd", "nbdkit"):
        rows = servers.get(server, [])
        if not rows or any("failed" in r for r in rows):
            table[server] = None
            continue
        read_mibs = [float(r["read_iops"]) * 4096 / 1048576 for r in rows]
        mibs = statistics.median([rm + float(r["write_mibs"]) for rm, r in zip(read_mibs, rows)])
        table[server] = (mibs, med(rows, "read_iops"), med(rows, "read_p99_us"), med(rows, "server_cpu_us_per_request"),
                         med(rows, "server_rss_mib"), med(rows, "server_kib_per_client"))
    base = table.get("nbdkit")
    for server in ("netswapd", "nbdkit"):
        t = table[server]
        if t is None:
            failure = next((r["failed"] for r in servers.get(server, []) if "failed" in r), "no run")
            print(f"| {shape} | {clients:,} | {server} | failed: {failure} | | | | | | | |")
            continue
        ratio = f"{t[0] / base[0]:.2f}" if base else "–"
        p99 = f"{t[2] / base[2]:.2f}" if base and base[2] else "–"
        cells = [f"{t[0]:,.1f}", f"{t[1]:,.0f}", f"{t[2]:,.0f}",
                 f"{t[3]:.1f}" if t[3] is not None else "n/a", f"{t[4]:,.1f}" if t[4] is not None else "n/a",
                 f"{t[5]:,.1f}" if t[5] is not None else "n/a"]
        print(f"| {shape} | {clients:,} | {server} | " + " | ".join(cells) + f" | {ratio} | {p99} |")
PYEOF
