# LTSP client init drop-in (/usr/share/ltsp/client/init/56-netswap.sh), for LTSP 19 and later, whose own init only
# turns on local swap partitions. LTSP sources it with the client's ltsp.conf variables set and calls netswap_main.
# Network swap is switched on from ltsp.conf, for all clients ([clients]) or one ([MAC or name] sections):
#   NETSWAP=yes|auto|no        yes: always; auto: below NETSWAP_THRESHOLD of memory (default 1G); no or unset: nothing
#   NETSWAP_SERVER=ADDR[:PORT] the swap server (default: found by discovery)
#   NETSWAP_SIZE=SIZE          the area's size (default: the server's)
#   NETSWAP_ENCRYPT=yes        dm-crypt with a random key (needs cryptsetup in the image)
# LTSP5's names are taken as well: NBD_SWAP, NBD_SWAP_SERVER, NBD_SWAP_PORT, ENCRYPT_SWAP.
# This file is sourced, not run: it defines a function and nothing else.

netswap_main() {
    local swap conf
    swap=${NETSWAP:-${NBD_SWAP:-}}
    case $swap in
        ""|[Nn]|[Nn]o|[Ff]alse|0|off) return 0 ;;
        [Yy]|[Yy]es|[Tt]rue|1|on) swap=yes ;;
        auto) ;;
        *) echo "netswap: NETSWAP=$swap in ltsp.conf is not yes, auto or no; no network swap" >&2; return 0 ;;
    esac
    # The settings go to a client.conf of their own (netswap reads no environment), in /run: nothing is written to
    # the image.
    mkdir -p /run/netswap
    conf=/run/netswap/ltsp-client.conf
    {
        echo "SWAP=$swap"
        [ -z "${NETSWAP_SERVER:-${NBD_SWAP_SERVER:-}}" ] || echo "SERVER=${NETSWAP_SERVER:-$NBD_SWAP_SERVER}"
        [ -z "${NBD_SWAP_PORT:-}" ] || echo "NBD_SWAP_PORT=$NBD_SWAP_PORT"
        [ -z "${NETSWAP_SIZE:-}" ] || echo "SIZE=$NETSWAP_SIZE"
        [ -z "${NETSWAP_THRESHOLD:-}" ] || echo "THRESHOLD=$NETSWAP_THRESHOLD"
        case ${NETSWAP_ENCRYPT:-${ENCRYPT_SWAP:-no}} in
            [Yy]|[Yy]es|[Tt]rue|1) echo "ENCRYPT=yes" ;;
        esac
    } > "$conf"
    modprobe nbd 2>/dev/null || true
    netswap attach --auto --config "$conf" || echo "netswap: no network swap attached" >&2
    return 0
}
