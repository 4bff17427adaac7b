#!/usr/bin/env bash
# Issue 9: limits unknown (no headers), enforced over a 1-s window.
#   bench/providers/unknown_1s.sh [N=1000]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/run_case.py" unknown_1s "${1:-1000}" --timeout 300 -- --rpm 600 --tpm 100000 --hide-headers --window 1
