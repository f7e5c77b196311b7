#!/usr/bin/python3
# Every option of the handshake through libnbd (python3-libnbd): LIST, INFO, GO, STRUCTURED_REPLY on and off,
# ABORT, an unknown export, and EXPORT_NAME via the old path. Usage: options.py nbd://HOST:PORT SIZE
import sys

import os

import nbd
from nbdtest import new_handle

base, size = sys.argv[1], int(sys.argv[2])
# For TLS runs: nbds://HOST:PORT as base, and ?tls-certificates=DIR here.
query = os.environ.get("NBD_URI_QUERY", "")


def opt_handle():
    h = new_handle()
    h.set_opt_mode(True)
    h.connect_uri(base + "/" + query)
    return h


# LIST: both exports, in any order.
h = opt_handle()
names = []
h.opt_list(lambda *a: names.append(a[0]) or 0)
assert sorted(names) == ["disk", "ro"], names
print("ok: NBD_OPT_LIST", names)

# INFO then GO on the same handle: INFO reports what GO then gives.
h.set_export_name("disk")
h.set_full_info(True)
h.opt_info()
info = (h.get_size(), h.is_read_only(), h.can_flush(), h.can_fua(), h.can_trim(), h.can_zero(), h.can_fast_zero(),
        h.can_df(), h.can_multi_conn(), h.can_cache(), h.get_block_size(nbd.SIZE_MINIMUM),
        h.get_block_size(nbd.SIZE_PREFERRED), h.get_block_size(nbd.SIZE_MAXIMUM))
assert info == (size, False, True, True, True, True, True, True, True, True, 1, 4096, 32 * 1024 * 1024), info
assert h.get_canonical_export_name() == "disk"
h.opt_go()
assert h.get_structured_replies_negotiated()
go = (h.get_size(), h.is_read_only(), h.can_flush(), h.can_fua(), h.can_trim(), h.can_zero(), h.can_fast_zero(),
      h.can_df(), h.can_multi_conn(), h.can_cache(), h.get_block_size(nbd.SIZE_MINIMUM),
      h.get_block_size(nbd.SIZE_PREFERRED), h.get_block_size(nbd.SIZE_MAXIMUM))
assert go == info, (go, info)
h.shutdown()
print("ok: NBD_OPT_INFO matches NBD_OPT_GO", info)

# Unknown export: INFO and GO fail, the handle stays usable in option mode.
h = opt_handle()
h.set_export_name("no-such-export")
for op in (h.opt_info, h.opt_go):
    try:
        op()
        raise AssertionError("unknown export accepted")
    except nbd.Error as e:
        assert "ENOENT" in str(e) or "EINVAL" in str(e), e
h.set_export_name("ro")
h.opt_go()
assert h.is_read_only() and not h.can_trim() and not h.can_zero()
h.shutdown()
print("ok: unknown export refused, read-only export flags")

# ABORT.
h = opt_handle()
h.opt_abort()
print("ok: NBD_OPT_ABORT")

# Without structured replies: DF is not offered, reads still work.
h = new_handle()
h.set_request_structured_replies(False)
h.set_export_name("disk")
h.connect_uri(base + "/disk" + query)
assert not h.get_structured_replies_negotiated()
assert not h.can_df()
assert len(h.pread(4096, 0)) == 4096
h.shutdown()
print("ok: simple replies only")

# NBD_OPT_EXPORT_NAME needs a server without TLS: TLS requires fixed newstyle and option haggling.
if not query:
    h = new_handle()
    h.set_handshake_flags(0)  # no FIXED_NEWSTYLE, no NO_ZEROES: only NBD_OPT_EXPORT_NAME is possible
    h.set_export_name("disk")
    h.connect_uri(base + "/disk" + query)
    assert h.get_size() == size
    h.pwrite(b"x" * 10, 100)
    assert h.pread(10, 100) == b"x" * 10
    h.shutdown()
    print("ok: NBD_OPT_EXPORT_NAME without fixed newstyle")
