#!/usr/bin/env bash
# Runs every test project and ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
dotnet test NetSwap.slnx -c "${CONFIG:-Release}" --logger "console;verbosity=normal" --logger trx --results-directory "$results" "$@"
status=$?
passed=0
failed=0
for trx in "$results"/*.trx; do
  [ -e "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx")
  p=$(sed -nE 's/.* passed="([0-9]+)".*/\1/p' <<<"$counters")
  f=$(sed -nE 's/.* failed="([0-9]+)".*/\1/p' <<<"$counters")
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
done
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # The build or the test host failed before the tests could report.
  failed=1
fi
echo
if [ "$failed" -gt 0 ]; then
  # The failures again, last, where a log that keeps only its tail still shows them.
  python3 scripts/trx-failures.py "$results"/*.trx || true
  # And the whole record, kept past this script's clean-up.
  mkdir -p test-results && cp "$results"/*.trx test-results/ 2>/dev/null || true
fi
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
