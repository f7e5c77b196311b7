#!/usr/bin/env bash
# Side-by-side benchmark: netswapd (native AOT build in dist/), nbdkit's file plugin, nbd-server and qemu-nbd serve the
# same image; Debian's fio with its nbd engine (libnbd) drives each in turn, round after round, so that all servers
# see the same machine state. Reports medians and ratios to nbdkit in docs/performance.md (or $BENCH_OUT).
#
#   bench/run.sh                         all workloads, image on tmpfs and on disk, 5 rounds of 5 s
#   ROUNDS=7 RUNTIME=10 bench/run.sh     longer
#   MEDIA=tmpfs bench/run.sh             one medium only
#   SERVERS="netswapd nbdkit" WORKLOADS="4k-randread-qd1 4k-randwrite-qd16" bench/run.sh   a subset
#   BASELINE=/tmp/old/netswapd bench/run.sh   also an earlier netswapd build (netswapd-baseline), same run: what a
#                                          change costs, measured side by side rather than across days
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
RUNTIME=${RUNTIME:-5}
MEDIA=${MEDIA:-"tmpfs disk"}
SIZE_MB=${SIZE_MB:-1024}
OUT=${BENCH_OUT:-docs/performance.md}
. bench/lib.sh
bench_require bench fio nbdkit nbd-server qemu-nbd

work=$(mktemp -d /tmp/netswap-bench.XXXXXX)
results="$work/results.tsv"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -f "$work/nbd-server.pid" ] && kill "$(cat "$work/nbd-server.pid")" 2>/dev/null || true
  cg_remove
  rm -rf "$work" /dev/shm/netswap-bench.img
}
trap cleanup EXIT

# name rw bs iodepth
all_workloads=(
  "4k-randread-qd1 randread 4k 1"
  "4k-randread-qd16 randread 4k 16"
  "4k-randwrite-qd1 randwrite 4k 1"
  "4k-randwrite-qd16 randwrite 4k 16"
  "128k-seqwrite-qd8 write 128k 8"
  "64k-randread-qd4 randread 64k 4"
)
workloads=()
for w in "${all_workloads[@]}"; do
  if [ -z "${WORKLOADS:-}" ] || [[ " $WORKLOADS " == *" ${w%% *} "* ]]; then workloads+=("$w"); fi
done
[ ${#workloads[@]} -gt 0 ] || { echo "bench: WORKLOADS matches none of: ${all_workloads[*]%% *}" >&2; exit 1; }
read -r -a servers <<<"${SERVERS:-netswapd nbdkit nbd-server qemu-nbd}"
if [ -n "${BASELINE:-}" ]; then
  [ -x "$BASELINE" ] || { echo "bench: BASELINE=$BASELINE is not an executable" >&2; exit 1; }
  servers=(netswapd netswapd-baseline "${servers[@]:1}")
fi
port_of() { case $1 in netswapd) echo 19572;; nbdkit) echo 19573;; nbd-server) echo 19574;; qemu-nbd) echo 19575;; netswapd-baseline) echo 19576;; esac; }
serving() { [[ " ${servers[*]} " == *" $1 "* ]]; }

# CPU time of each server, children and threads included: each runs in a cgroup of its own (cgroup v1 cpuacct, or v2
# cpu.stat), so a row can say how much CPU the server spent per request. Where neither can be made, the column says n/a.
cg_root=""
if [ -d /sys/fs/cgroup/cpuacct ] && mkdir -p /sys/fs/cgroup/cpuacct/netswap-bench 2>/dev/null; then
  cg_root=/sys/fs/cgroup/cpuacct/netswap-bench
elif [ -f /sys/fs/cgroup/cgroup.controllers ] && mkdir -p /sys/fs/cgroup/netswap-bench 2>/dev/null; then
  cg_root=/sys/fs/cgroup/netswap-bench
fi
cg_join() {   # server pid: moves the process (and what it starts later) into the server's cgroup
  [ -n "$cg_root" ] || return 0
  mkdir -p "$cg_root/$1"
  echo "$2" > "$cg_root/$1/cgroup.procs" 2>/dev/null || true
}
cg_usage_us() {   # server: CPU time used so far, in microseconds (empty without a cgroup)
  [ -n "$cg_root" ] || return 0
  if [ -f "$cg_root/$1/cpuacct.usage" ]; then
    echo $(( $(cat "$cg_root/$1/cpuacct.usage") / 1000 ))
  elif [ -f "$cg_root/$1/cpu.stat" ]; then
    awk '$1 == "usage_usec" { print $2 }' "$cg_root/$1/cpu.stat"
  fi
}
cg_remove() {
  [ -n "$cg_root" ] || return 0
  for d in "$cg_root"/*/; do
    [ -d "$d" ] || continue
    # Whatever is left (nothing, normally) goes back to the parent so the directory can go.
    while read -r p; do echo "$p" > "$cg_root/../cgroup.procs" 2>/dev/null || true; done < "$d/cgroup.procs"
    rmdir "$d" 2>/dev/null || true
  done
  rmdir "$cg_root" 2>/dev/null || true
}

start_servers() {
  local image=$1
  if serving netswapd; then
    "$NETSWAPD" --listen "127.0.0.1:$(port_of netswapd)" --export "bench=$image" -q 2>"$work/netswapd.log" &
    pids+=($!)
    cg_join netswapd $!
  fi
  if serving netswapd-baseline; then
    "$BASELINE" --listen "127.0.0.1:$(port_of netswapd-baseline)" --export "bench=$image" -q 2>"$work/baseline.log" &
    pids+=($!)
    cg_join netswapd-baseline $!
  fi
  if serving nbdkit; then
    nbdkit -f -p "$(port_of nbdkit)" -i 127.0.0.1 file "$image" 2>"$work/nbdkit.log" &
    pids+=($!)
    cg_join nbdkit $!
  fi
  serving nbd-server && start_nbd_server "$image"
  if serving qemu-nbd; then
    qemu-nbd -f raw -b 127.0.0.1 -p "$(port_of qemu-nbd)" -x bench -t -e 16 "$image" 2>"$work/qemu-nbd.log" &
    pids+=($!)
    cg_join qemu-nbd $!
  fi
  for s in "${servers[@]}"; do wait_port "$(port_of "$s")"; done
}

start_nbd_server() {
  local image=$1
  cat > "$work/nbd-server.conf" <<CONF
[generic]
  listenaddr = 127.0.0.1
  port = $(port_of nbd-server)
  allowlist = true
[bench]
  exportname = $image
CONF
  nbd-server -C "$work/nbd-server.conf" -p "$work/nbd-server.pid" 2>"$work/nbd-server.log"
  for _ in $(seq 1 50); do [ -s "$work/nbd-server.pid" ] && break; sleep 0.05; done
  cg_join nbd-server "$(cat "$work/nbd-server.pid")"   # it forks a process per client: those follow it
}

stop_servers() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  [ -f "$work/nbd-server.pid" ] && kill "$(cat "$work/nbd-server.pid")" 2>/dev/null || true
  rm -f "$work/nbd-server.pid"
  sleep 0.5
}

run_fio() {
  local medium=$1 round=$2 server=$3 name=$4 rw=$5 bs=$6 depth=$7
  local json="$work/$medium-$server-$name-$round.json"
  local cpu_before cpu_after started ended
  cpu_before=$(cg_usage_us "$server")
  started=$(date +%s%N)
  fio --name="$name" --ioengine=nbd --uri="nbd://127.0.0.1:$(port_of "$server")/bench" --rw="$rw" --bs="$bs" \
      --iodepth="$depth" --runtime="$RUNTIME" --time_based --ramp_time=1 --output-format=json --output="$json" >/dev/null
  ended=$(date +%s%N)
  # nbd-server's child for this client is counted once the parent has reaped it.
  [ "$server" = nbd-server ] && sleep 0.2
  cpu_after=$(cg_usage_us "$server")
  "$PY" - "$json" "$medium" "$server" "$name" "$round" "${cpu_before:-}" "${cpu_after:-}" "$started" "$ended" >>"$results" <<'PYEOF'
import json, sys
path, medium, server, name, rnd, cpu_before, cpu_after, started, ended = sys.argv[1:]
job = json.load(open(path))["jobs"][0]
side = job["write"] if job["write"]["io_bytes"] > job["read"]["io_bytes"] else job["read"]
lat = side["lat_ns"]
p99 = side["clat_ns"].get("percentile", {}).get("99.000000", 0)
# fio's own CPU, user and system, in % of one core over its run: near 100 % means the client is the limit.
client_cpu = job["usr_cpu"] + job["sys_cpu"]
# The server's CPU per request: its share of a core over fio's whole run (ramp included) over the measured rate.
server_us = "nan"
if cpu_before and cpu_after and side["iops"] > 0:
    seconds = (int(ended) - int(started)) / 1e9
    server_us = f"{(int(cpu_after) - int(cpu_before)) / seconds / side['iops']:.2f}"
print("\t".join([medium, server, name, rnd, f"{side['iops']:.1f}", f"{side['bw_bytes'] / 1048576:.1f}", f"{lat['mean'] / 1000:.1f}", f"{p99 / 1000:.1f}", f"{client_cpu:.1f}", server_us]))
PYEOF
}

for medium in $MEDIA; do
  case $medium in
    tmpfs) image=/dev/shm/netswap-bench.img ;;
    disk) image="$work/bench.img" ;;
    *) echo "bench: unknown medium $medium" >&2; exit 1 ;;
  esac
  echo "bench: writing a ${SIZE_MB} MiB image on $medium"
  dd if=/dev/urandom of="$image" bs=1M count="$SIZE_MB" status=none
  start_servers "$image"
  for round in $(seq 1 "$ROUNDS"); do
    for w in "${workloads[@]}"; do
      read -r name rw bs depth <<<"$w"
      for server in "${servers[@]}"; do
        echo "bench: $medium round $round $name $server"
        run_fio "$medium" "$round" "$server" "$name" "$rw" "$bs" "$depth"
      done
    done
  done
  stop_servers
  rm -f "$image"
done

"$PY" bench/report.py "$results" "$ROUNDS" "$RUNTIME" > "$OUT"
echo "bench: wrote $OUT"
