# Sourced by the bench scripts: checks what a script needs before it starts anything.
NETSWAPD=${NETSWAPD:-dist/netswapd}
PY=/usr/bin/python3

# bench_require SCRIPT TOOL...: every TOOL on the PATH and the native build at $NETSWAPD, or a message naming what is
# missing and exit 1.
bench_require() {
  local script=$1 tool
  shift
  for tool in "$@" "$PY"; do
    command -v "$tool" >/dev/null || { echo "$script: $tool missing (make test-deps installs it)" >&2; exit 1; }
  done
  [ -x "$NETSWAPD" ] || { echo "$script: $NETSWAPD missing (make dist)" >&2; exit 1; }
}

# wait_port PORT...: until something accepts on each 127.0.0.1:PORT (5 s each), or a message naming the port and
# status 1 (the scripts run under set -e: they stop there).
wait_port() {
  local port
  for port in "$@"; do
    for _ in $(seq 1 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue 2
      sleep 0.05
    done
    echo "bench: nothing listening on $port" >&2
    return 1
  done
}
