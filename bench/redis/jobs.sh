#!/usr/bin/env bash
# Issue 11: shared jobs on Redis: throughput with Redis vs SQLite (limits
# off), the pace of one job on 1, 2 and 4 processes against one limit, and
# the reclaim time after a worker is killed. Needs a release build
# and redis-server (scripts/test-deps.sh).
#   bench/redis/jobs.sh [N=20000]      about 6 minutes
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v redis-server >/dev/null || { echo "bench: redis-server is missing: run scripts/test-deps.sh" >&2; exit 1; }
mkdir -p "$here/results"
python3 "$here/jobs.py" "${1:-20000}" | tee "$here/results/jobs-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
