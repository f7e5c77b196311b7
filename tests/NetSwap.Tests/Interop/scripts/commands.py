#!/usr/bin/python3
# Every command and error case through libnbd, with structured replies: READ (chunked and DF), WRITE (+FUA), FLUSH,
# TRIM, WRITE_ZEROES (NO_HOLE, FAST_ZERO), CACHE; out of range, read-only, unknown flags.
# Usage: commands.py nbd://HOST:PORT SIZE
import errno
import os
import sys

import nbd
from nbdtest import new_handle

base, size = sys.argv[1], int(sys.argv[2])
# For TLS runs: nbds://HOST:PORT as base, and ?tls-certificates=DIR here.
query = os.environ.get("NBD_URI_QUERY", "")
h = new_handle()
h.set_export_name("disk")
h.connect_uri(base + "/disk" + query)
assert h.get_structured_replies_negotiated()
# Let bad requests reach the server: its answers are what is under test.
h.set_strict_mode(0)

# Work in [8 MiB, 10 MiB): the export is fresh and sparse there.
area = 8 * 1024 * 1024
data = os.urandom(300001)
h.pwrite(data, area + 12345, nbd.CMD_FLAG_FUA)
assert h.pread(len(data), area + 12345) == data
h.flush()
print("ok: write/FUA/read/flush")

chunks = []


def chunk(*args):
    buf, offset, status = args[0], args[1], args[2]
    chunks.append((offset, len(buf), status))
    return 0


# A read over data and a large sparse area: data and hole chunks.
h.pread_structured(2 * 1024 * 1024, area, chunk)
statuses = {c[2] for c in chunks}
assert nbd.READ_DATA in statuses and nbd.READ_HOLE in statuses, chunks
assert sum(c[1] for c in chunks) == 2 * 1024 * 1024
print("ok: structured read with", len(chunks), "chunks")
chunks.clear()
buf = h.pread_structured(2 * 1024 * 1024, area, chunk, nbd.CMD_FLAG_DF)
assert len(chunks) == 1 and chunks[0][2] == nbd.READ_DATA, chunks
assert buf[12345:12345 + len(data)] == data
print("ok: DF read is one chunk")

h.trim(65536, 4 * 1024 * 1024)
h.zero(65536, 5 * 1024 * 1024, nbd.CMD_FLAG_NO_HOLE)
h.zero(65536, 6 * 1024 * 1024, nbd.CMD_FLAG_FAST_ZERO)
h.zero(1000, area + 12345)
assert h.pread(1000, area + 12345) == bytes(1000)
h.cache(1024 * 1024, 0)
print("ok: trim, zero (NO_HOLE, FAST_ZERO), cache")


def expect(code, op, *args):
    try:
        op(*args)
    except nbd.Error as e:
        assert e.errno in (code, errno.errorcode[code]), (op.__name__, e.errno, code, str(e))
        return
    raise AssertionError(f"{op.__name__}{args} succeeded")


expect(errno.EINVAL, h.pread, 4096, size - 100)
expect(errno.ENOSPC, h.pwrite, b"y" * 4096, size - 100)
expect(errno.EINVAL, h.trim, 4096, size)
expect(errno.ENOSPC, h.zero, 4096, size)
expect(errno.EINVAL, h.pread, 512, 0, 0x40)   # unknown command flag
expect(errno.EINVAL, h.pread, 0, 0)           # length 0
# The connection is still in sync after every error.
assert h.pread(len(data) - 1000, area + 13345) == data[1000:]
print("ok: EINVAL/ENOSPC for out-of-range, unknown flags and length 0")
h.shutdown()

ro = new_handle()
ro.set_export_name("ro")
ro.connect_uri(base + "/ro" + query)
ro.set_strict_mode(0)
expect(errno.EPERM, ro.pwrite, b"z" * 512, 0)
expect(errno.EPERM, ro.trim, 512, 0)
expect(errno.EPERM, ro.zero, 512, 0)
assert ro.pread(512, 0) is not None
ro.shutdown()
print("ok: EPERM on the read-only export")
