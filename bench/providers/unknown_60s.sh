#!/usr/bin/env bash
# Issue 9: limits unknown (no headers), enforced over the usual one-minute bucket.
#   bench/providers/unknown_60s.sh [N=1000]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/run_case.py" unknown_60s "${1:-1000}" --timeout 300 -- --rpm 600 --tpm 100000 --hide-headers
