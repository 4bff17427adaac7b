#!/usr/bin/env bash
# Issue 4, figure 1: unknown limits. Two variants in parallel (rate-bound,
# not CPU-bound): the mock's default one-minute bucket, and a one-second
# bucket (--burst 10), as real providers enforce short windows.
#   bench/adaptive/unknown_limits.sh [N=6000] [SUFFIX] [EXTRA MOCK FLAGS...]
#   e.g. unknown_limits.sh 6000 -lat500 --latency 500 --latency-tail --seed 3
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
n=${1:-6000}; suffix=${2:-}; shift $(( $# > 2 ? 2 : $# ))
pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done' EXIT
"$here/unknown_one.sh" "minute$suffix" "$n" --rpm 600 --hide-headers "$@" & pids+=($!)
"$here/unknown_one.sh" "second$suffix" "$n" --rpm 600 --hide-headers --burst 10 "$@" & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
pids=()
exit $rc
