#!/usr/bin/env bash
# Issue 9: limits known from headers, enforced over a 1-s window (Azure, Anthropic).
#   bench/providers/known_1s.sh [N=1000]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/run_case.py" known_1s "${1:-1000}" -- --rpm 600 --tpm 100000 --window 1
