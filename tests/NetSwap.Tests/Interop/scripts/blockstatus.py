#!/usr/bin/python3
# base:allocation through libnbd (python3-libnbd): LIST_META_CONTEXT and SET_META_CONTEXT (with and without structured
# replies, by name and by namespace, an unknown namespace, an unknown export), then NBD_CMD_BLOCK_STATUS: the extents
# of a sparse export whose data the test wrote at known places, REQ_ONE, a range past the end, and a request without
# any context selected. Usage: blockstatus.py nbd://HOST:PORT EXPORT SIZE "START:LENGTH,..." (the data extents)
import errno
import os
import sys

import nbd
from nbdtest import new_handle

base, export, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = [tuple(int(x) for x in part.split(":")) for part in sys.argv[4].split(",")]
query = os.environ.get("NBD_URI_QUERY", "")
HOLE_ZERO = nbd.STATE_HOLE | nbd.STATE_ZERO


def opt_handle(structured=True):
    h = new_handle()
    h.set_opt_mode(True)
    h.set_request_structured_replies(structured)
    h.connect_uri(base + "/" + export + query)
    return h


def listed(h, *queries):
    names = []
    for q in queries:
        h.add_meta_context(q)
    h.opt_list_meta_context(lambda name: names.append(name) or 0)
    h.clear_meta_contexts()
    return names


# LIST: every context without a query; by name; by namespace; none for another namespace.
h = opt_handle()
assert listed(h) == ["base:allocation"], listed(h)
assert listed(h, "base:allocation") == ["base:allocation"]
assert listed(h, "base:") == ["base:allocation"]
assert listed(h, "x-netswap:nothing") == []
print("ok: NBD_OPT_LIST_META_CONTEXT")

# An export that does not exist: an error, not an empty list.
h.set_export_name("no-such-export")
try:
    h.opt_list_meta_context(lambda name: 0)
    raise AssertionError("listing contexts of a missing export succeeded")
except nbd.Error:
    pass
h.set_export_name(export)
h.opt_abort()
print("ok: contexts of a missing export refused")

# Without structured replies the server refuses (NBD_REP_ERR_INVALID); libnbd lets the option through in opt mode.
h = opt_handle(structured=False)
h.set_strict_mode(0)
try:
    h.opt_list_meta_context(lambda name: 0)
    raise AssertionError("LIST_META_CONTEXT without structured replies succeeded")
except nbd.Error:
    pass
h.opt_abort()
print("ok: no metadata contexts without structured replies")

# SET then GO: base:allocation selected, and the extents are those of the file.
h = opt_handle()
h.add_meta_context("base:allocation")
h.opt_go()
assert h.can_meta_context("base:allocation")

extents = []


def collect(metacontext, offset, entries, err):
    assert metacontext == "base:allocation", metacontext
    extents.append((offset, list(entries)))
    return 0


def expected(start, length):
    """The extents of [start, start+length) as (length, flags), from the data ranges."""
    out = []
    position = start
    end = start + length
    for (d, n) in sorted(data):
        if d + n <= position or d >= end:
            continue
        if d > position:
            out.append((d - position, HOLE_ZERO))
        out.append((min(d + n, end) - max(d, position), 0))
        position = min(d + n, end)
    if position < end:
        out.append((end - position, HOLE_ZERO))
    return out


offset = 0
got = []
while offset < size:
    extents.clear()
    h.block_status(min(size - offset, 2**32 - 4096), offset, collect)
    entries = extents[0][1]
    pairs = list(zip(entries[0::2], entries[1::2]))
    assert pairs and all(length > 0 for length, _ in pairs), pairs
    got += pairs
    offset += sum(length for length, _ in pairs)
assert got == expected(0, size), (got, expected(0, size))
print("ok: NBD_CMD_BLOCK_STATUS extents", got)

# REQ_ONE: one extent, the first.
extents.clear()
h.block_status(size, 0, collect, nbd.CMD_FLAG_REQ_ONE)
assert len(extents[0][1]) == 2 and (extents[0][1][0], extents[0][1][1]) == expected(0, size)[0], extents
print("ok: NBD_CMD_FLAG_REQ_ONE")

# Starting inside a data extent: the first descriptor begins there.
d, n = sorted(data)[0]
extents.clear()
h.block_status(n, d + 4096, collect)
assert (extents[0][1][0], extents[0][1][1]) == (n - 4096, 0), extents
print("ok: status from inside an extent")

# Past the end: EINVAL, and the connection goes on.
h.set_strict_mode(0)
try:
    h.block_status(8192, size - 4096, collect)
    raise AssertionError("block status past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
assert h.pread(4096, d) is not None
print("ok: past the end is EINVAL")
h.shutdown()

# No context selected: the server answers EINVAL (libnbd would refuse client-side; strict mode off lets it through).
h = new_handle()
h.set_strict_mode(0)
h.connect_uri(base + "/" + export + query)
assert not h.can_meta_context("base:allocation")
try:
    h.block_status(4096, 0, collect)
    raise AssertionError("block status without a context succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
h.shutdown()
print("ok: no context, EINVAL")
