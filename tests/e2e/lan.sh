# Sourced by the end-to-end runners: a LAN of its own for a guest, in network namespace $1: a bridge br0 (the
# server's side, 10.254.0.1/24) and a tap device tap0 on it for QEMU.
e2e_lan_up() {
  local ns=$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add br0 type bridge
  ip -n "$ns" addr add 10.254.0.1/24 brd + dev br0
  ip -n "$ns" link set br0 up
  ip -n "$ns" tuntap add tap0 mode tap
  ip -n "$ns" link set tap0 master br0
  ip -n "$ns" link set tap0 up
}
