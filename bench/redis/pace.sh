#!/usr/bin/env bash
# Issue 11: the aggregate pace of 1, 2 and 4 `pacer run`s sharing one limit
# through Redis (and 2 without, for comparison), and what Redis adds to a
# request. Needs a release build and redis-server (scripts/test-deps.sh).
#   bench/redis/pace.sh [N=600]      about 5 minutes
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v redis-server >/dev/null || { echo "bench: redis-server is missing: run scripts/test-deps.sh" >&2; exit 1; }
mkdir -p "$here/results"
python3 "$here/pace.py" "${1:-600}" | tee "$here/results/pace-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
