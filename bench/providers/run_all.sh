#!/usr/bin/env bash
# Every issue-9 case, in parallel (each is rate-bound, not CPU-bound; ~3-5 minutes
# in all). Needs a release build: cargo build --release -p pacer-cli
# Prints one JSON line a case; full records in bench/providers/results/.
#   bench/providers/run_all.sh [N=1000]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
n=${1:-1000}
pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done' EXIT
# The input is generated once, before the cases share it.
mkdir -p "${BENCH_WORK:-/tmp/pacer-bench-providers}"
in="${BENCH_WORK:-/tmp/pacer-bench-providers}/input-$n.jsonl"
[[ -f "$in" ]] || python3 "$here/gen.py" "$n" "$in"
for c in known_1s known_5s chars unknown_60s unknown_1s hangs; do
  "$here/$c.sh" "$n" & pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
pids=()
exit $rc
