# Shared by the nbdsh test scripts: how they open a libnbd handle.
import nbd


def new_handle():
    h = nbd.NBD()
    # TLS runs name their certificate directory in the URI (tls-certificates=DIR).
    h.set_uri_allow_local_file(True)
    return h
