#!/usr/bin/env bash
# Every issue-4 benchmark; the rate-bound runs go in parallel (~10 minutes).
#   bench/adaptive/run_all.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done' EXIT
"$here/unknown_limits.sh" 6000 & pids+=($!)
"$here/headers.sh" 1500 & pids+=($!)
"$here/outage.sh" 1200 & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
pids=()
exit $rc
