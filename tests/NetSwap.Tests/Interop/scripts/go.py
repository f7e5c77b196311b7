#!/usr/bin/python3
# A bare NBD handshake from a chosen source address: prints the reply type to NBD_OPT_GO (ack, policy, ...).
# Used inside network namespaces, where the test process cannot bind. Usage: go.py SOURCE SERVER PORT EXPORT
import socket
import struct
import sys

source, server, port, export = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
family = socket.AF_INET6 if ":" in server else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.bind((source, 0))
s.settimeout(10)
s.connect((server, port))


def recv(n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            print("closed")
            sys.exit(0)
        data += chunk
    return data


greeting = recv(18)
assert greeting[:16] == b"NBDMAGICIHAVEOPT", greeting
s.sendall(struct.pack(">I", 3))
data = struct.pack(">I", len(export)) + export + struct.pack(">H", 0)
s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)
while True:
    magic, option, kind, length = struct.unpack(">QIII", recv(20))
    recv(length)
    if kind != 3:   # NBD_REP_INFO: keep reading
        break
names = {1: "ack", 0x80000002: "policy", 0x80000006: "unknown"}
print(names.get(kind, hex(kind)))
