#!/bin/sh
# Runs inside the e2e-install guest, booted with systemd as PID 1 (e2e-install-check.service), as root: installs the
# two packages with apt (their dependencies are in the image, so nothing is downloaded), checks the server as installed,
# attaches swap from it through the kernel's NBD client, then purges both and checks nothing of ours is left.
# Every finding is one line "E2E-INSTALL: ..." on the second serial port; the last one is PASS or FAIL.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive
# Everything on the second serial port, which the host writes to a file: the console (ttyS0) gets hung up by getty.
exec > /dev/ttyS1 2>&1
failed=0
echo "E2E-INSTALL: started, $(nproc) CPUs, $(free -m | awk '/Mem:/ {print $2}') MiB"
say() { echo "E2E-INSTALL: $*"; }
check() { # check DESCRIPTION COMMAND...
  what=$1; shift
  if out=$("$@" 2>&1); then say "ok   $what"; else say "FAIL $what: $(echo "$out" | tail -n 5 | tr '\n' ' ')"; failed=1; fi
}
t0=$(date +%s)
# apt's own output goes to the console as it happens: the client package's update-initramfs trigger is the slow part.
if apt-get -o Dpkg::Use-Pty=0 install -y --no-install-recommends /root/netswapd.deb /root/netswap-client.deb; then
  say "ok   apt installs both packages"
else
  say "FAIL apt installs both packages"; failed=1
fi
say "installed in $(( $(date +%s) - t0 )) s"

check "netswapd.socket is active" systemctl is-active netswapd.socket
check "netswapd.service waits for its socket" sh -c '! systemctl is-active --quiet netswapd.service'
check "the socket listens on 9572/tcp and 9572/udp" sh -c 'ss -ltn | grep -q ":9572 " && ss -lun | grep -q ":9572 "'

# A discovery probe (unicast to this host) starts the service, and is answered.
t0=$(date +%s)
check "a discovery probe starts the service and is answered" sh -c 'netswap discover --address 127.0.0.1 --timeout 20s | grep -q admits'
say "probe answered in $(( $(date +%s) - t0 )) s"
check "netswapd.service is active" systemctl is-active netswapd.service
check "netswapd runs as netswap" sh -c '[ "$(ps -o user= -C netswapd | head -n 1)" = netswap ]'
check "its sandbox: no capabilities" sh -c 'grep -q "^CapEff:[[:space:]]*0000000000000000" /proc/$(pidof netswapd)/status'
check "its sandbox: a system-call filter" sh -c 'grep -q "^Seccomp:[[:space:]]*2" /proc/$(pidof netswapd)/status'
check "its sandbox: NoNewPrivs" sh -c 'grep -q "^NoNewPrivs:[[:space:]]*1" /proc/$(pidof netswapd)/status'
check "the control socket is /run/netswap/netswapd.sock" test -S /run/netswap/netswapd.sock
check "netswapd status as root answers" sh -c 'netswapd status | grep -q "up since"'
check "/var/lib/netswap belongs to netswap, mode 0700" sh -c '[ "$(stat -c "%a %U" /var/lib/netswap)" = "700 netswap" ]'

# Swap through the kernel's NBD client from the service as installed, then back off.
modprobe nbd 2>/dev/null
check "netswap attach 127.0.0.1" netswap attach 127.0.0.1 --size 64M
check "the swap is on" sh -c 'grep -q "^/dev/nbd" /proc/swaps'
check "netswapd status lists the client" sh -c 'netswapd status | grep -q "swap/"'
check "netswap detach --all" netswap detach --all
check "no swap left on" sh -c '! grep -q "^/dev/nbd" /proc/swaps'
check "systemctl reload (SIGHUP)" systemctl reload netswapd.service
check "the journal has no error of netswapd" sh -c '! journalctl -u netswapd -p err --no-pager -q | grep -q .'

check "apt purge removes both" apt-get purge -y netswapd netswap-client
check "no netswap user or group" sh -c '! getent passwd netswap && ! getent group netswap'
check "no /var/lib/netswap, /etc/netswap, /run/netswap" sh -c '[ ! -e /var/lib/netswap ] && [ ! -e /etc/netswap ] && [ ! -e /run/netswap ]'
check "no unit of ours" sh -c '! systemctl list-unit-files --no-legend | grep -q netswap && ! find /etc/systemd /lib/systemd /usr/lib/systemd -name "*netswap*" | grep -q .'
check "no process of ours" sh -c '! pidof netswapd && ! pidof netswap'
check "no file of ours" sh -c '! find / -xdev -name "*netswap*" -not -path "/root/*" -not -path "/var/lib/dpkg/*" -not -path "/var/cache/*" -not -path "/var/log/*" | grep -q .'

if [ $failed = 0 ]; then say PASS; else
  journalctl -u netswapd --no-pager -q | tail -n 20 | sed 's/^/E2E-INSTALL: log /'
  say FAIL
fi
systemctl poweroff
