#!/usr/bin/env bash
# An AFL++ campaign on one SharpFuzz target of tests/NetSwap.Fuzz, started from the seed corpus in
# tests/NetSwap.Fuzz/corpus. Installs afl++ (Debian) and the sharpfuzz tool (NuGet) when missing, publishes the
# target and instruments the server's assemblies.
#
#   scripts/fuzz.sh [connection|parsers] [SECONDS]     default: connection, 600
#
# Findings go to artifacts/fuzz/TARGET (crashes/ and hangs/ hold the inputs; replay one with
# `dotnet artifacts/fuzz/build/NetSwap.Fuzz.dll TARGET < FILE`). Exits 1 when the campaign saved a crash or a hang.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-connection}
seconds=${2:-600}
case $target in connection|parsers) ;; *) echo "fuzz: unknown target '$target' (connection or parsers)" >&2; exit 2 ;; esac

# afl++ brings clang with it; `make dist` links with gcc whatever is installed (see the Makefile).
if ! command -v afl-fuzz >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++ >/dev/null
fi
tool=$top/artifacts/fuzz/tool
[ -x "$tool/sharpfuzz" ] || dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path "$tool" >/dev/null
build=$top/artifacts/fuzz/build
rm -rf "$build"
dotnet publish "$top/tests/NetSwap.Fuzz" -c Release -o "$build" >/dev/null
"$tool/sharpfuzz" "$build/NetSwap.Server.dll"
"$tool/sharpfuzz" "$build/NetSwap.Protocol.dll"

findings=$top/artifacts/fuzz/$target
rm -rf "$findings"
# The target is `dotnet`, not an AFL-compiled binary (SharpFuzz speaks AFL's protocol from inside it).
AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  afl-fuzz -i "$top/tests/NetSwap.Fuzz/corpus" -o "$findings" -t 10000 -m none -V "$seconds" \
  -- dotnet "$build/NetSwap.Fuzz.dll" "$target" >"$top/artifacts/fuzz/$target.log" 2>&1 || true

stats=$findings/default/fuzzer_stats
[ -f "$stats" ] || { echo "fuzz: afl-fuzz did not run; see artifacts/fuzz/$target.log" >&2; tail -20 "$top/artifacts/fuzz/$target.log" >&2; exit 2; }
value() { sed -n "s/^$1 *: //p" "$stats"; }
crashes=$(find "$findings/default/crashes" -name 'id:*' | wc -l)
hangs=$(find "$findings/default/hangs" -name 'id:*' | wc -l)
echo "fuzz $target: $(value execs_done) inputs in $(value run_time) s ($(value execs_per_sec)/s), corpus $(value corpus_count), crashes $crashes, hangs $hangs"
[ "$crashes" -eq 0 ] && [ "$hangs" -eq 0 ]
