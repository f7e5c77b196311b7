#!/bin/busybox sh
# PID 1 of the end-to-end guest: brings up the network, attaches swap over NBD from the NetSwap server, runs the
# workload and reports a verdict on the serial console. Parameters come from the kernel command line (netswap.*).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "NETSWAP-E2E: $*"; }
param() { sed -n "s/.*netswap\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
finish() {
    say "VERDICT $1"
    sync
    poweroff -f
}
trap 'finish FAIL' EXIT

insmod /lib/modules/e1000.ko || finish FAIL
insmod /lib/modules/nbd.ko nbds_max=4 || finish FAIL
ip link set lo up
ip link set eth0 up
# The emulated e1000 takes a moment to report carrier; probes sent before that are lost.
for _ in $(seq 1 100); do [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] && break; sleep 0.1; done
ADDRESS=$(param ip)
ip addr add "${ADDRESS:-10.0.2.15/24}" dev eth0
[ -z "$ADDRESS" ] && ip route add default via 10.0.2.2

SERVER=$(param server)
PORT=$(param port)
TOKEN=$(param token)
REGION=$(param region)
LOCK=$(param lock)
SCENARIO=$(param scenario)
MODE=$(param mode)
say "memory: $(grep MemTotal /proc/meminfo)"

if [ "$SCENARIO" = tls ]; then
    # TLS through the kernel client: nbd-client relays through its userspace TLS proxy, which is not safe for swap
    # (it can deadlock under memory pressure), so this scenario checks data, not swap.
    say "attaching swap/$TOKEN from $SERVER:$PORT over TLS"
    nbd-client "$SERVER" "$PORT" -N "swap/$TOKEN" /dev/nbd0 -b 4096 \
        -certfile /certs/client-cert.pem -keyfile /certs/client-key.pem -cacertfile /certs/ca-cert.pem || finish FAIL
    # Checksums instead of copies: the initramfs is in RAM and has little room to spare.
    written=$(dd if=/dev/urandom bs=1M count=4 2>/dev/null | tee /dev/nbd0 | md5sum | cut -d' ' -f1)
    sync
    echo 3 > /proc/sys/vm/drop_caches
    read=$(dd if=/dev/nbd0 bs=1M count=4 2>/dev/null | md5sum | cut -d' ' -f1)
    say "written $written read $read"
    [ -n "$written" ] && [ "$written" = "$read" ] || { say "data read back differs"; finish FAIL; }
    say "TLS DATA VERIFIED 4 MiB"
    nbd-client -d /dev/nbd0 || finish FAIL
    trap - EXIT
    finish PASS
fi

if [ "${SCENARIO%%-*}" = ktls ]; then
    # Kernel TLS: netswap attach --tls hands the kernel a socket that encrypts in the kernel.
    for module in gf128mul ghash-generic ctr gcm libchacha chacha_generic libpoly1305 poly1305_generic chacha20poly1305 tls; do
        insmod "/lib/modules/$module.ko" || finish FAIL
    done
    TLS="--tls --tls-certificates /certs"
fi
if [ "$SCENARIO" = encrypt ]; then
    # dm-crypt for netswap attach --encrypt; no udev here, so libdevmapper makes the /dev/mapper nodes itself.
    for module in dm-mod ecb xts dm-crypt; do insmod "/lib/modules/$module.ko" || finish FAIL; done
    mkdir -p /run/cryptsetup /dev/mapper
    export DM_DISABLE_UDEV=1
    ENCRYPT=--encrypt
fi
if [ "$SCENARIO" != basic ]; then
    # A task blocked this long (20 s; the kernel's default is 120) gets its kernel stack on the console: when a reconnect
    # hangs, that shows where (the keeper waiting on a page, the device's queue, the network).
    echo 20 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null || true
    # The client as users run it: netswap attach (nbd-client by netlink plus the reconnect keeper, swapon, no mkswap
    # needed); without a server on the command line it finds one by discovery.
    TARGET=${SERVER:+$SERVER:$PORT}
    # The short cut (5 s with the link down) is meant to be shorter than the timeouts, so that nothing has to
    # reconnect: the kernel gives a send as long as the request time-out, and the default (5 s) is no longer than the cut.
    case $SCENARIO in *cut) IOTIMEOUT="--io-timeout 15s" ;; esac
    say "netswap attach ${TARGET:-(discovery)} $IOTIMEOUT"
    NETSWAP_RSS=1 netswap attach $TARGET --token "$TOKEN" --size 128M --priority 5 $ENCRYPT $TLS ${MODE:+--mode $MODE} $IOTIMEOUT || finish FAIL
    say "free: $(free | sed -n 2p)"
    netswap status
    DEVICE=$(netswap status --json | sed -n 's/.*"device": "\([^"]*\)".*/\1/p' | head -1)
else
    say "attaching swap/$TOKEN from $SERVER:$PORT"
    nbd-client "$SERVER" "$PORT" -N "swap/$TOKEN" /dev/nbd0 -swap -b 4096 || finish FAIL
    # No mkswap: the server hands the area out with a swap header already written.
    swapon /dev/nbd0 || finish FAIL
    DEVICE=/dev/nbd0
fi
say "swaps: $(tail -n +2 /proc/swaps)"
before_in=$(sed -n 's/^pswpin //p' /proc/vmstat)
before_out=$(sed -n 's/^pswpout //p' /proc/vmstat)
start=$(cut -d' ' -f1 /proc/uptime)
if [ "$SCENARIO" = ktls ]; then
    # The proof that no process relays swap: once swapping is well under way, every NetSwap and nbd-client process
    # is killed (the reconnect keeper included); the workload must still verify every page.
    (
        while [ "$(sed -n 's/^pswpout //p' /proc/vmstat)" -lt $((before_out + 3000)) ]; do sleep 1; done
        killall -9 netswap nbd-client 2>/dev/null
        # A killed process with locked memory takes a moment to go.
        for _ in 1 2 3 4 5 6 7 8 9 10; do pidof netswap nbd-client >/dev/null || break; sleep 1; done
        say "killed every netswap and nbd-client process with SIGKILL at $(( $(sed -n 's/^pswpout //p' /proc/vmstat) - before_out )) pages out; left: $(pidof netswap nbd-client | wc -w) $(for p in $(pidof netswap nbd-client); do tr '\0' ' ' < /proc/$p/cmdline; sed -n 's/^State://p' /proc/$p/status; done)"
    ) &
fi
/bin/memtest "$REGION" "$LOCK"
result=$?
end=$(cut -d' ' -f1 /proc/uptime)
if [ "$result" -ne 0 ]; then
    # Why, in the first lines anyone reads: a signal (the OOM killer's, or SIGBUS for a page swap could not read back)
    # and what the kernel said about memory, I/O and the NBD device.
    if [ "$result" -gt 128 ]; then say "memtest killed by signal $((result - 128))"; else say "memtest exited with $result"; fi
    dmesg | grep -i -E "invoked oom-killer|killed process|i/o error|nbd[0-9]+:|blk_update|read-error|sigbus" | tail -n 12 \
        | while read -r line; do say "kernel: $line"; done
fi
say "pages swapped in $(( $(sed -n 's/^pswpin //p' /proc/vmstat) - before_in )) out $(( $(sed -n 's/^pswpout //p' /proc/vmstat) - before_out )) workload ${start}s..${end}s"
if [ "$SCENARIO" != basic ]; then
    # What the reconnect keeper said (it logs to the kernel log, below this console's loglevel).
    dmesg | grep "netswap-keep" | while read -r line; do say "$line"; done
    netswap status
    netswap detach || result=1
    grep -q nbd /proc/swaps && result=1
else
    swapoff "$DEVICE" || result=1
    nbd-client -d "$DEVICE" || result=1
fi
trap - EXIT
if [ "$result" -eq 0 ]; then finish PASS; else finish FAIL; fi
