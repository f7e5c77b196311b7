#!/usr/bin/python3
# Pipelined requests from 4 connections at once on a multi-conn export: many writes and reads in flight per
# connection, completions in any order, then every byte checked from a connection that did not write it.
# Usage: pipelined.py nbd://HOST:PORT/EXPORT
import os
import sys

import nbd
from nbdtest import new_handle

uri = sys.argv[1]
handles = []
for i in range(4):
    h = new_handle()
    h.connect_uri(uri)
    assert h.can_multi_conn()
    handles.append(h)

block = 65536
per_conn = 64
expected = {}
max_in_flight = 0
writes = []
for i, h in enumerate(handles):
    for j in range(per_conn):
        offset = (i * per_conn + j) * block
        data = os.urandom(block)
        expected[offset] = data
        writes.append((h, h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), offset)))
    max_in_flight = max(max_in_flight, h.aio_in_flight())
for h in handles:
    while h.aio_in_flight() > 0:
        h.poll(-1)
for h, cookie in writes:
    assert h.aio_command_completed(cookie)
assert max_in_flight > 1, max_in_flight
handles[0].flush()

# Read back crosswise: connection k reads what connection k+1 wrote, all in flight at once.
pending = []
for i, h in enumerate(handles):
    writer = (i + 1) % 4
    for j in range(per_conn):
        offset = (writer * per_conn + j) * block
        buf = nbd.Buffer(block)
        cookie = h.aio_pread(buf, offset)
        pending.append((h, cookie, buf, offset))
for h in handles:
    while h.aio_in_flight() > 0:
        h.poll(-1)
for h, cookie, buf, offset in pending:
    assert h.aio_command_completed(cookie)
    assert buf.to_bytearray() == expected[offset], offset
for h in handles:
    h.shutdown()
print(f"ok: {len(expected)} writes and reads over 4 connections, up to {max_in_flight} in flight per connection")
