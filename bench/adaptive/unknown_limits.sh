#!/usr/bin/env bash
# Issue 4, figure 1: unknown limits. Two variants in parallel (rate-bound,
# not CPU-bound): the mock's default one-minute bucket, and a one-second
# bucket (--burst 10), as real providers enforce short windows.
#   bench/adaptive/unknown_limits.sh [N=6000]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
n=${1:-6000}
pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done' EXIT
"$here/unknown_one.sh" minute "$n" --rpm 600 --hide-headers & pids+=($!)
"$here/unknown_one.sh" second "$n" --rpm 600 --hide-headers --burst 10 & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
pids=()
exit $rc
