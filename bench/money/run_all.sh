#!/usr/bin/env bash
# Every issue-5 benchmark, one after the other (~7 minutes). Run it while
# nothing else loads the CPU: the splitting figure is CPU-bound.
#   bench/money/run_all.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/estimate_error.sh" 1000
"$here/budget.sh" 20 20261129 100 max
"$here/budget.sh" 20 20261129 100 real
"$here/split_throughput.sh" 20 3
