#!/bin/sh
# PID 1 of the e2e-install client guest (init=/root/client-init), on the root file system that the initramfs mounted.
# By now the package's init-premount script has attached swap by discovery, before this root existed; this checks
# that, runs the workload of tests/e2e (memtest: twice the usable RAM, every page verified), detaches with the
# installed client and powers off. One line "NETSWAP-E2E: ..." per finding on the console.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "NETSWAP-E2E: $*"; }
finish() {
    say "VERDICT $1"
    sync
    echo o > /proc/sysrq-trigger
    sleep 30
}
# initramfs-tools moved /proc, /sys, /dev and /run here; mount what is missing all the same.
[ -r /proc/swaps ] || mount -t proc proc /proc
say "memory: $(grep MemTotal /proc/meminfo)"
if grep -q '^/dev/nbd' /proc/swaps; then
    say "swap on before init: $(grep '^/dev/nbd' /proc/swaps)"
else
    say "no network swap on when init started"
    dmesg | tail -n 20 | while read -r line; do say "kernel: $line"; done
    finish FAIL
fi
netswap status || { say "netswap status failed"; finish FAIL; }
before_in=$(sed -n 's/^pswpin //p' /proc/vmstat)
before_out=$(sed -n 's/^pswpout //p' /proc/vmstat)
# All but 32 MiB of what is available locked, so the workload's 64 MiB is twice the usable memory, as in tests/e2e
# (the reconnect keeper, started in the initramfs, is resident and already counted).
available=$(( $(sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024 ))
lock=$(( available - 32 ))
say "available ${available} MiB, locking ${lock} MiB"
/root/memtest 64 "$lock"
result=$?
if [ "$result" -ne 0 ]; then
    say "memtest exited with $result"
    dmesg | grep -i -E "invoked oom-killer|killed process|i/o error|nbd[0-9]+:" | tail -n 12 | while read -r line; do say "kernel: $line"; done
fi
say "pages swapped in $(( $(sed -n 's/^pswpin //p' /proc/vmstat) - before_in )) out $(( $(sed -n 's/^pswpout //p' /proc/vmstat) - before_out ))"
# A second attach (netswap-client.service would run one at boot) finds the swap already attached and leaves it.
netswap attach --auto || result=1
netswap detach --all || result=1
grep -q '^/dev/nbd' /proc/swaps && { say "swap still on after detach"; result=1; }
if [ "$result" -eq 0 ]; then finish PASS; else finish FAIL; fi
