#!/usr/bin/env bash
# Swap in the end-to-end guest, side by side: plain NBD (`attach`), kernel TLS (`ktls`, netswap attach --tls) and
# dm-crypt (`encrypt`, netswap attach --encrypt), each through tests/e2e/run.sh, rounds interleaved. Every run swaps the
# same workload (memtest: 64 MiB, twice the usable memory, about 82,000 pages in and 102,000 out); the table gives
# medians and the ratio to plain NBD of: the whole workload, swap throughput (pages in and out per second of it) and
# the scattered check (every page read once in an order far from sequential, most from swap: a latency figure).
#
#   bench/guestswap.sh                 SCENARIOS="attach ktls encrypt" ROUNDS=2 (TCG guest: about 75 s a run)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_require guestswap.sh qemu-system-x86_64
scenarios=${SCENARIOS:-attach ktls encrypt}
rounds=${ROUNDS:-2}
out=${BENCH_OUT:-$(mktemp -d /tmp/netswap-guestswap.XXXXXX)}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for scenario in $scenarios; do
    log="$out/$scenario-$round.log"
    NETSWAPD="$NETSWAPD" tests/e2e/run.sh "$scenario" > "$log" 2>&1 || { tail -n 40 "$log"; echo "guestswap: $scenario failed (round $round)" >&2; exit 1; }
    echo "guestswap: $scenario round $round: $(grep -o 'MEMTEST PASS.*' "$log")" >&2
  done
done
"$PY" - "$out" $scenarios <<'EOF'
import glob, re, statistics, sys
out, scenarios = sys.argv[1], sys.argv[2:]
rows = {}
for s in scenarios:
    runs = []
    for path in sorted(glob.glob(f"{out}/{s}-*.log")):
        text = open(path).read()
        total = float(re.search(r"MEMTEST PASS .*seconds=([0-9.]+)", text).group(1))
        sequential = float(re.search(r"sequential check done at ([0-9.]+)s", text).group(1))
        scattered = float(re.search(r"scattered check done at ([0-9.]+)s", text).group(1))
        pin, pout = map(int, re.search(r"pages swapped in (\d+) out (\d+)", text).groups())
        runs.append((total, (pin + pout) / total, scattered - sequential))
    rows[s] = [statistics.median(c) for c in zip(*runs)] + [len(runs)]
base = rows.get("attach")
print("| scenario | runs | workload s | pages/s | scattered check s | workload vs plain | throughput vs plain | scattered vs plain |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for s, (total, rate, scattered, n) in rows.items():
    ratios = f"{total / base[0]:.2f}× | {rate / base[1]:.2f}× | {scattered / base[2]:.2f}×" if base else "– | – | –"
    print(f"| {s} | {n} | {total:.1f} | {rate:,.0f} | {scattered:.1f} | {ratios} |")
EOF
