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
