#!/usr/bin/python3
"""Connection-level figures of the performance issue, for one netswapd binary: time from exec to listening, time
from TCP connect to the end of NBD_OPT_GO, server memory per idle connection (1,000 by default), and the server's
resident memory and CPU time while it holds them idle for 10 s.
Usage: bench/connections.py dist/netswapd [IDLE_CONNECTIONS]"""
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1]
idle_count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
work = tempfile.mkdtemp()
image = os.path.join(work, "disk.img")
with open(image, "wb") as f:
    f.truncate(16 << 20)
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()


def cpu_seconds(pid):
    """User plus system CPU time the process has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def go(export=b"disk"):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def recv(n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            assert chunk, "closed"
            data += chunk
        return data
    recv(18)
    s.sendall(struct.pack(">I", 3))
    data = struct.pack(">I", len(export)) + export + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)
    while True:
        _, _, kind, length = struct.unpack(">QIII", recv(20))
        recv(length)
        if kind != 3:
            assert kind == 1, hex(kind)
            return s


started = time.perf_counter()
server = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--export", f"disk={image}", "--swap", "off",
                           "--discovery", "off", "--control-socket", os.path.join(work, "ctl.sock"), "-q",
                           "--max-clients", "0", "--max-clients-per-address", "0", "--connection-rate", "0"],
                          stderr=subprocess.DEVNULL)
while True:
    try:
        socket.create_connection(("127.0.0.1", port)).close()
        break
    except OSError:
        time.sleep(0.0005)
startup = time.perf_counter() - started

setup = []
for _ in range(200):
    t = time.perf_counter()
    s = go()
    setup.append(time.perf_counter() - t)
    s.close()

time.sleep(0.5)
before = rss(server.pid)
idle = [go() for _ in range(idle_count)]
time.sleep(1)
after = rss(server.pid)
# CPU while idle: the server holding every idle connection, nothing asked of it, for 10 s.
cpu_start = cpu_seconds(server.pid)
time.sleep(10)
idle_cpu = cpu_seconds(server.pid) - cpu_start
for s in idle:
    s.close()
server.terminate()
server.wait()
print(f"start to listening: {startup * 1000:.1f} ms")
print(f"connect to end of NBD_OPT_GO: median {statistics.median(setup) * 1000:.3f} ms, p99 {sorted(setup)[int(len(setup) * 0.99) - 1] * 1000:.3f} ms")
print(f"{idle_count} idle connections after GO: RSS {before >> 20} MiB -> {after >> 20} MiB, {(after - before) / idle_count / 1024:.1f} KiB each")
print(f"idle with {idle_count} connections: RSS {after >> 20} MiB, CPU {idle_cpu * 1000:.0f} ms in 10 s ({idle_cpu / 10 * 100:.2f}% of one core)")
