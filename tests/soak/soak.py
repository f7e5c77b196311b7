#!/usr/bin/python3
"""Fault soak for netswapd (issue 14): for a given time, clients of every kind connect, do verified I/O and vanish
in every way a real client can (cleanly, without NBD_CMD_DISC, by RST, half-way through a payload, by no longer
reading replies, by a link cut with requests in flight, by a reset in the middle of the TLS handshake), about a third of
them over TLS (NBD_OPT_STARTTLS, client certificates checked by the CA), while SIGHUP arrives every few seconds. At the end: no request was left unanswered, no area or byte
is left on the swap file system, RSS is back near where it was once warm, and the daemon exits on SIGTERM in time.

Usage: soak.py [--minutes M] [--daemon "CMD ..."]   (root: it mounts a tmpfs for the swap areas)
Talks only to 127.0.0.1 and to a network namespace of its own (a veth pair whose client end it sets down and up
again). Prints one line per finding and a summary; exit 0 when every check held, 1 otherwise.
"""
import argparse
import ctypes
import json
import os
import random
import re
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
IHAVEOPT = 0x49484156454F5054
OPT_GO = 7
OPT_STARTTLS = 5
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
SEND_TIMEOUT = 3
PAYLOAD_TIMEOUT = 3
GRACE = 2
SHUTDOWN_TIMEOUT = 2
# Unacknowledged data this old ends a connection in the kernel (a client whose TCP no longer answers at all).
USER_TIMEOUT = 5
# Keepalive of the soak's daemon: an idle client behind a cut link is found dead after 2 s + 2 probes 1 s apart.
KEEPALIVE = ("2s", "1s", "2")
# A request unanswered this long while its client reads is a stall: the failure this soak exists to find.
STALL = 10
MIB = 1 << 20

failures = []
counts = {}
# The client side of TLS (set in main from the credentials it makes): None runs every client in plain text.
tls_context = None
tls_client_directory = None
lock = threading.Lock()


def fail(message):
    with lock:
        failures.append(message)
    print(f"soak: FAIL {message}", flush=True)


def count(kind):
    with lock:
        counts[kind] = counts.get(kind, 0) + 1


def recv_exact(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def option(sock, opt, data=b""):
    sock.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def connect(port, name, timeout=STALL, receive_buffer=None, host="127.0.0.1", tls=False, stop_in_tls=None):
    """Fixed newstyle handshake (with NBD_OPT_STARTTLS and a client certificate when tls) and NBD_OPT_GO; returns
    (socket, export size, transmission flags). stop_in_tls: a random.Random (the run's seeded one) that picks a point of
    the TLS handshake to RST at instead."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        # Before connect, so the window is small from the start (set later on loopback, segments are dropped instead).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.connect((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv_exact(sock, 18)
    sock.sendall(struct.pack(">I", 3))
    if tls:
        option(sock, OPT_STARTTLS)
        _, _, reply, length = struct.unpack(">QIII", recv_exact(sock, 20))
        recv_exact(sock, length)
        if reply != 1:
            raise RuntimeError(f"STARTTLS refused: {reply:#x}")
        if stop_in_tls is not None:
            # Half a ClientHello, or nothing at all, then gone: the server must not wait on it past the handshake timeout.
            hello = ssl.MemoryBIO(), ssl.MemoryBIO()
            engine = tls_context.wrap_bio(*hello, server_hostname=host)
            try:
                engine.do_handshake()
            except ssl.SSLWantReadError:
                pass
            record = hello[1].read()
            sock.sendall(record[:stop_in_tls.randrange(len(record))])
            rst_close(sock)
            return None, None, None
        sock = tls_context.wrap_socket(sock, server_hostname=host)
    encoded = name.encode()
    data = struct.pack(">I", len(encoded)) + encoded + struct.pack(">H", 0)
    option(sock, OPT_GO, data)
    size = flags = None
    while True:
        _, _, reply, length = struct.unpack(">QIII", recv_exact(sock, 20))
        payload = recv_exact(sock, length)
        if reply == 1:
            return sock, size, flags
        if reply == 3 and struct.unpack(">H", payload[:2])[0] == 0:
            size, flags = struct.unpack(">QH", payload[2:12])
        elif reply & 0x80000000:
            raise RuntimeError(f"GO {name} refused: {reply:#x} {payload[4:].decode(errors='replace')}")


def request(cmd, cookie, offset, length, flags=0):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length)


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def use_tls(rng):
    return tls_context is not None and rng.random() < 0.3


def verified_client(port, rng, token):
    """Pipelined writes and reads (up to 16 in flight) against a model of the area; ends in one of four ways."""
    tls = use_tls(rng)
    sock, size, flags = connect(port, f"swap/{token}:16M", tls=tls)
    # NBD_CMD_FLAG_FUA only where the export says NBD_FLAG_SEND_FUA.
    fua = [0, 0, 0, 1] if flags & (1 << 3) else [0]
    model = {}
    region = min(size, 16 * MIB) // 4096
    inflight = {}
    cookie = 0
    # Pages of requests in flight: never two at once on one page, so the model is exact.
    busy = set()
    for _ in range(rng.randint(50, 400)):
        while len(inflight) < 16:
            page = rng.randrange(1, region)
            if page in busy:
                break
            cookie += 1
            busy.add(page)
            if page in model and rng.random() < 0.5:
                inflight[cookie] = ("read", page, model[page])
                sock.sendall(request(CMD_READ, cookie, page * 4096, 4096))
            else:
                value = bytes([rng.randrange(256)]) * 4096
                model[page] = value
                inflight[cookie] = ("write", page, None)
                sock.sendall(request(CMD_WRITE, cookie, page * 4096, 4096, flags=rng.choice(fua)) + value)
        started = time.monotonic()
        try:
            magic, error, answered = struct.unpack(">IIQ", recv_exact(sock, 16))
        except socket.timeout:
            fail(f"verified client {token}: {len(inflight)} requests unanswered for {time.monotonic() - started:.0f} s")
            sock.close()
            return
        if magic != SIMPLE_REPLY_MAGIC or answered not in inflight:
            fail(f"verified client {token}: bad reply magic {magic:#x} or cookie {answered}")
            sock.close()
            return
        kind, page, expected = inflight.pop(answered)
        busy.discard(page)
        if error:
            fail(f"verified client {token}: {kind} of page {page} failed with error {error}")
        if kind == "read" and not error:
            if recv_exact(sock, 4096) != expected:
                fail(f"verified client {token}: page {page} read back wrong")
    ending = rng.choice(["disc", "fin", "rst", "rst-in-flight"])
    if ending in ("disc", "rst"):
        while inflight:
            magic, error, answered = struct.unpack(">IIQ", recv_exact(sock, 16))
            kind, _, _ = inflight.pop(answered)
            if kind == "read" and not error:
                recv_exact(sock, 4096)
    if ending == "disc":
        sock.sendall(request(CMD_DISC, 0, 0, 0))
        sock.close()
    elif ending == "fin":
        sock.close()
    else:
        rst_close(sock)
    count(f"verified{'-tls' if tls else ''}/{ending}")


def libnbd_client(port, rng, token):
    import nbd
    h = nbd.NBD()
    tls = use_tls(rng)
    if tls:
        h.set_uri_allow_local_file(True)
        h.connect_uri(f"nbds://127.0.0.1:{port}/swap/{token}:16M?tls-certificates={tls_client_directory}")
    else:
        h.connect_uri(f"nbd://127.0.0.1:{port}/swap/{token}:16M")
    for _ in range(rng.randint(5, 40)):
        offset = rng.randrange(0, 16 * MIB - 65536, 4096)
        data = os.urandom(rng.choice([4096, 65536]))
        h.pwrite(data, offset)
        if h.pread(len(data), offset) != data:
            fail(f"libnbd client {token}: read back wrong at {offset}")
    suffix = "-tls" if tls else ""
    if rng.random() < 0.5:
        h.shutdown()
        count(f"libnbd{suffix}/clean")
    else:
        count(f"libnbd{suffix}/vanish")
    # libnbd 1.14's Python binding has no close(): the handle closes its socket when it goes.
    del h


def qemu_io_client(port, rng, token):
    pattern = rng.randrange(1, 255)
    result = subprocess.run(
        ["qemu-io", "-f", "raw", "-c", f"write -P {pattern} 0 1M", "-c", f"read -P {pattern} 0 1M",
         f"nbd://127.0.0.1:{port}/swap:8M"], capture_output=True, text=True, timeout=STALL * 6)
    if result.returncode != 0 or "verification failed" in result.stdout + result.stderr:
        fail(f"qemu-io: exit {result.returncode}: {(result.stdout + result.stderr).strip()[-300:]}")
    count("qemu-io")


def flood_without_reading(sock, seconds=1.0):
    """WRITEs, replies never read, until the server stops taking them."""
    sock.setblocking(False)
    cookie = 0
    idle_since = time.monotonic()
    message = b""
    while time.monotonic() - idle_since < seconds:
        if not message:
            cookie += 1
            message = request(CMD_WRITE, cookie, (cookie % 256) * 4096, 4096) + b"\x5a" * 4096
        try:
            sent = sock.send(message)
            message = message[sent:]
            idle_since = time.monotonic()
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            # Over TLS the same bytes are offered again (Python lets the buffer move between attempts).
            time.sleep(0.01)
    sock.setblocking(True)


def wait_cut(sock, within):
    """True when the server closes (or resets) the connection within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def misbehaving_client(port, rng, token):
    tls = use_tls(rng)
    if tls and rng.random() < 0.25:
        connect(port, f"swap/{token}:8M", tls=True, stop_in_tls=rng)
        count("misbehaving-tls/rst-in-tls-handshake")
        return
    sock, _, _ = connect(port, f"swap/{token}:8M", receive_buffer=4096, tls=tls)
    kind = rng.choice(["stop-reading-rst", "stop-reading-stay", "half-payload-rst", "half-payload-stay"])
    if kind.startswith("stop-reading"):
        flood_without_reading(sock)
        if kind.endswith("rst"):
            rst_close(sock)
        else:
            # Read nothing more: the server must cut it after send-timeout.
            if not wait_cut_without_reading(sock, SEND_TIMEOUT + STALL):
                fail(f"client {token} that stopped reading was not cut within {SEND_TIMEOUT + STALL} s")
            sock.close()
    else:
        length = rng.choice([64 * 1024, 1 * MIB])
        sock.sendall(request(CMD_WRITE, 1, 0, length) + b"\x11" * (length // 2))
        if kind.endswith("rst"):
            time.sleep(rng.random())
            rst_close(sock)
        else:
            if not wait_cut(sock, PAYLOAD_TIMEOUT + STALL):
                fail(f"client {token} that stopped half-way through a payload was not cut within {PAYLOAD_TIMEOUT + STALL} s")
            sock.close()
    count(f"misbehaving{'-tls' if tls else ''}/{kind}")


def wait_cut_without_reading(sock, within):
    """Whether the server gives up on us (we keep not reading): the socket reports an error or the peer's FIN."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        # MSG_PEEK of nothing new tells us nothing; TCP_INFO's state does: the server's FIN or RST moves it off ESTABLISHED.
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        if state != 1:
            return True
        time.sleep(0.2)
    return False


class LinkNamespace:
    """A network namespace joined to this one by a veth pair: the client end can be cut (set down) and mended."""
    CLONE_NEWNET = 0x40000000

    def __init__(self):
        tag = os.getpid() % 100000
        self.name = f"nssoak{tag}"
        self.host_link, self.client_link = f"vsh{tag}", f"vsc{tag}"
        subnet = f"10.251.{tag % 250 + 1}"
        self.server_address, self.client_address = f"{subnet}.1", f"{subnet}.2"

    def create(self):
        for command in (["ip", "netns", "add", self.name],
                        ["ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.client_link],
                        ["ip", "link", "set", self.client_link, "netns", self.name],
                        ["ip", "addr", "add", f"{self.server_address}/24", "dev", self.host_link],
                        ["ip", "link", "set", self.host_link, "up"],
                        ["ip", "-n", self.name, "addr", "add", f"{self.client_address}/24", "dev", self.client_link],
                        ["ip", "-n", self.name, "link", "set", "lo", "up"],
                        ["ip", "-n", self.name, "link", "set", self.client_link, "up"]):
            subprocess.run(command, check=True)

    def enter(self):
        """Moves the calling thread (only it) into the namespace: the sockets it makes from here on live there."""
        fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, self.CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)

    def link(self, up):
        subprocess.run(["ip", "-n", self.name, "link", "set", self.client_link, "up" if up else "down"], check=True)

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name])
        subprocess.run(["ip", "link", "del", self.host_link], stderr=subprocess.DEVNULL)


def link_cut_worker(netns, port, seed, deadline, daemon_cmd, control):
    """Rounds of clients in the namespace (writer blocked on unread replies, requests in flight, mid-payload, idle),
    then the link goes down under them: the server must let every one go, and its area with it, within the bound."""
    netns.enter()
    rng = random.Random(seed)
    bound = max(USER_TIMEOUT, 2 + 2 * 1, PAYLOAD_TIMEOUT, SEND_TIMEOUT) + GRACE + STALL
    rounds = 0
    while time.monotonic() < deadline - bound:
        rounds += 1
        netns.link(True)
        socks = []
        try:
            token = f"cut{seed}r{rounds}"
            blocked, _, _ = connect(port, f"swap/{token}b:8M", receive_buffer=4096, host=netns.server_address)
            flood_without_reading(blocked)
            socks.append(blocked)
            inflight, _, _ = connect(port, f"swap/{token}i:8M", host=netns.server_address)
            inflight.sendall(b"".join(request(CMD_READ, i + 1, i * 65536, 65536) for i in range(16))
                             + request(CMD_WRITE, 99, 0, 65536) + b"\x33" * 65536)
            socks.append(inflight)
            midway, _, _ = connect(port, "swap:8M", host=netns.server_address)
            midway.sendall(request(CMD_WRITE, 1, 0, 1 * MIB) + b"\x44" * (256 * 1024))
            socks.append(midway)
            idle, _, _ = connect(port, "swap:8M", host=netns.server_address)
            socks.append(idle)
            time.sleep(rng.random() * 0.2)
            netns.link(False)
            cut = time.monotonic()
            while True:
                state = status(daemon_cmd, control)
                left = [c for c in state["clients"] if c["address"].startswith(netns.client_address + ":")]
                areas = [a for a in state["swap"]["areas"] if a["client"].startswith(netns.client_address + ":")]
                if not left and not areas:
                    count("link-cut")
                    with lock:
                        counts["link-cut slowest release (s)"] = max(counts.get("link-cut slowest release (s)", 0),
                                                                      round(time.monotonic() - cut, 1))
                    break
                if time.monotonic() - cut > bound:
                    fail(f"link cut {token}: {len(left)} connections and {len(areas)} areas still there {bound} s later")
                    break
                time.sleep(0.5)
        except Exception as e:  # noqa: BLE001 - every failure is a finding, named and counted
            fail(f"link cut round {rounds}: {type(e).__name__}: {e}")
        finally:
            for sock in socks:
                sock.close()
    netns.link(True)


def worker(port, seed, deadline, kinds):
    rng = random.Random(seed)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        kind = rng.choice(kinds)
        token = f"w{seed}n{n}"
        try:
            kind(port, rng, token)
        except Exception as e:  # noqa: BLE001 - every failure is a finding, named and counted
            fail(f"{kind.__name__} {token}: {type(e).__name__}: {e}")


def status(daemon_cmd, control):
    result = subprocess.run(daemon_cmd + ["status", "--json", "--control-socket", control], capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"status: {result.stderr.strip()}")
    return json.loads(result.stdout)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--daemon", default=os.path.join(here, "..", "..", "dist", "netswapd"),
                        help="how to run netswapd (a command line)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    daemon_cmd = shlex.split(args.daemon)
    print(f"soak: {args.minutes} minutes, seed {args.seed}, daemon {args.daemon}", flush=True)

    work = tempfile.mkdtemp(prefix="netswap-soak-")
    swap = os.path.join(work, "swap")
    os.mkdir(swap, 0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1G,mode=0700", "tmpfs", swap], check=True)
    control = os.path.join(work, "ctl.sock")
    # Credentials for the TLS third of the clients (client certificates checked by the CA, as a lab would).
    tls = os.path.join(work, "tls")
    subprocess.run([os.path.join(here, "..", "..", "scripts", "netswap-make-certs"), tls, "--server-name", "localhost",
                    "--client", "soak"], check=True)
    global tls_context, tls_client_directory
    tls_client_directory = os.path.join(tls, "clients", "soak")
    tls_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(tls_client_directory, "ca-cert.pem"))
    tls_context.load_cert_chain(os.path.join(tls_client_directory, "client-cert.pem"),
                                os.path.join(tls_client_directory, "client-key.pem"))
    daemon = None
    netns = LinkNamespace()
    try:
        netns.create()
        fs = os.statvfs(swap)
        used_before = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        daemon = subprocess.Popen(
            daemon_cmd + ["--listen", "127.0.0.1:0", "--listen", f"{netns.server_address}:0", "--swap-dir", swap, "--swap-size", "16M", "--swap-grace", f"{GRACE}s",
                          "--send-timeout", f"{SEND_TIMEOUT}s", "--payload-timeout", f"{PAYLOAD_TIMEOUT}s",
                          "--shutdown-timeout", f"{SHUTDOWN_TIMEOUT}s", "--tcp-user-timeout", f"{USER_TIMEOUT}s", "--discovery", "off", "--control-socket", control,
                          "--keepalive-time", KEEPALIVE[0], "--keepalive-interval", KEEPALIVE[1],
                          "--keepalive-count", KEEPALIVE[2],
                          "--tls", "on", "--tls-certificates", os.path.join(tls, "server"), "--tls-verify-client",
                          # Every client here comes from 127.0.0.1, unlike a lab's: the per-address limits would
                          # refuse them (a 30-minute run met connection-rate once: 88 connections reset at connect).
                          "--max-clients-per-address", "1000", "--connection-rate", "0"],
            stderr=subprocess.PIPE, text=True)
        log = []
        threading.Thread(target=lambda: [log.append(line) for line in daemon.stderr], daemon=True).start()
        port = cut_port = None
        for _ in range(300):
            port = port or next((int(m.group(1)) for line in list(log)
                                 if (m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line))), None)
            cut_port = cut_port or next((int(m.group(1)) for line in list(log)
                                         if (m := re.search(rf"listening on {re.escape(netns.server_address)}:(\d+)", line))), None)
            if port and cut_port:
                break
            time.sleep(0.1)
        if port is None or cut_port is None:
            raise RuntimeError("netswapd did not start:\n" + "".join(log))

        deadline = time.monotonic() + args.minutes * 60
        kinds = [verified_client, verified_client, libnbd_client, qemu_io_client, misbehaving_client]
        threads = [threading.Thread(target=worker, args=(port, args.seed * 100 + i, deadline, kinds)) for i in range(6)]
        threads.append(threading.Thread(target=link_cut_worker, args=(netns, cut_port, args.seed * 100 + 99, deadline,
                                                                       daemon_cmd, control)))
        for t in threads:
            t.start()
        warm = None
        peak = 0
        last_hup = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            peak = max(peak, rss_kib(daemon.pid))
            if warm is None and time.monotonic() > deadline - args.minutes * 60 + 15:
                warm = rss_kib(daemon.pid)
            if time.monotonic() - last_hup > 5:
                daemon.send_signal(signal.SIGHUP)
                count("sighup")
                last_hup = time.monotonic()
            if daemon.poll() is not None:
                raise RuntimeError(f"netswapd exited with {daemon.returncode} during the soak:\n" + "".join(log[-30:]))
        warm = warm or peak
        if not counts.get("link-cut"):
            fail("no link-cut round completed")

        # Everything ends: connections (grace, timeouts) and their areas; the space is back.
        settle = time.monotonic() + GRACE + max(SEND_TIMEOUT, PAYLOAD_TIMEOUT) + 20
        state = status(daemon_cmd, control)
        while (state["clients"] or state["swap"]["areas"]) and time.monotonic() < settle:
            time.sleep(0.5)
            state = status(daemon_cmd, control)
        if state["clients"] or state["swap"]["areas"]:
            fail(f"left behind: {len(state['clients'])} clients, {len(state['swap']['areas'])} areas, "
                 f"{state['swap']['in_use']} B committed")
        fs = os.statvfs(swap)
        used_after = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        if used_after > used_before:
            fail(f"{used_after - used_before} B still used on the swap file system")
        end = rss_kib(daemon.pid)
        print(f"soak: RSS warm {warm // 1024} MiB, peak {peak // 1024} MiB, end {end // 1024} MiB", flush=True)
        if end > warm + 64 * 1024:
            fail(f"RSS {end // 1024} MiB at the end, {warm // 1024} MiB once warm")

        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=SHUTDOWN_TIMEOUT + 3)
            if code != 0:
                fail(f"netswapd exited {code} on SIGTERM")
            print(f"soak: SIGTERM to exit {time.monotonic() - started:.2f} s", flush=True)
        except subprocess.TimeoutExpired:
            fail(f"netswapd still running {SHUTDOWN_TIMEOUT + 3} s after SIGTERM")
        for line in log:
            if "Unhandled exception" in line or "unexpected" in line or "closed at once" in line:
                fail(f"daemon log: {line.strip()}")
        if failures:
            # What the daemon said when things went wrong: its warnings and errors.
            for line in [line for line in log if " warn " in line or " fail " in line or " error " in line][-30:]:
                print(f"soak: daemon: {line.strip()}", flush=True)
    finally:
        if daemon and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        netns.delete()
        subprocess.run(["umount", "-l", swap])
        subprocess.run(["rm", "-rf", work])
    print("soak: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
    print(f"soak: {len(failures)} failures", flush=True)
    return 1 if failures or not counts else 0


if __name__ == "__main__":
    sys.exit(main())
