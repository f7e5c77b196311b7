#!/usr/bin/env bash
# What a managed TLS 1.3 stack would cost the client, against the OpenSSL that netswap links: a small probe
# (bench/tlscost/) connects to netswapd, sends NBD_OPT_STARTTLS and runs a TLS 1.3 handshake with BouncyCastle
# (BouncyCastle.Cryptography, the managed TLS on the NuGet mirror; it exposes the traffic secrets), then ABORT, and
# prints its memory; the same probe without TLS is the baseline. Native AOT, dynamically linked: the statically linked
# BouncyCastle build crashed with SIGSEGV here. Sizes as built and gzip -9 (as in an initramfs image).
#
#   bench/tlscost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_require tlscost.sh dotnet openssl
work=$(mktemp -d /tmp/netswap-tlscost.XXXXXX)
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
scripts/netswap-make-certs "$work/certs" --server-name tlscost --client c1 >/dev/null
mkdir "$work/swap"
"$NETSWAPD" --listen "127.0.0.1:$port" --swap-dir "$work/swap" --discovery off --tls on --tls-certificates "$work/certs/server" \
  --control-socket "$work/control.sock" > "$work/netswapd.log" 2>&1 &
server=$!
wait_port "$port"
for variant in plain bc; do
  dotnet publish bench/tlscost -c Release -r linux-x64 -p:PublishAot=true -p:WithBc=$([ $variant = bc ] && echo true || echo false) \
    -o "$work/$variant" >/dev/null
  echo "$variant: $(stat -c %s "$work/$variant/bcprobe") bytes, $(gzip -9c "$work/$variant/bcprobe" | wc -c) gzipped; $("$work/$variant/bcprobe" "127.0.0.1:$port" | tr '\n' ' ')"
done
echo "netswap (OpenSSL linked in, static): $(stat -c %s dist/netswap) bytes, $(gzip -9c dist/netswap | wc -c) gzipped"
