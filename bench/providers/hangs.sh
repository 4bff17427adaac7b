#!/usr/bin/env bash
# Issue 9: 2% of requests hang, default --timeout (10m): the share done when the pace alone would have finished + 10% (then the run is stopped).
#   bench/providers/hangs.sh [N=1000]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/run_case.py" hangs "${1:-1000}" --check-at-pace 1.1 -- --rpm 600 --window 1 --latency 200 --hang-rate 0.02 --seed 9
