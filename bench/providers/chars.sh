#!/usr/bin/env bash
# Issue 9: the tokens limiter counts characters (ceil(chars/4) + max_tokens x n) and the headers tell its count; usage reports tiktoken.
#   bench/providers/chars.sh [N=1000]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/run_case.py" chars "${1:-1000}" -- --rpm 600 --tpm 100000 --window 1 --charge chars
