#!/usr/bin/env bash
# Runs every test project and ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
dotnet test NetSwap.slnx -c "${CONFIG:-Release}" --logger "console;verbosity=normal" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=0
failed=0
while read -r f p; do
  passed=$((passed + p))
  failed=$((failed + f))
done < <(sed -nE 's/.*Failed:[[:space:]]+([0-9]+), Passed:[[:space:]]+([0-9]+),.*/\1 \2/p' "$log")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # The build or the test host failed before any test could report.
  failed=1
fi
echo
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
