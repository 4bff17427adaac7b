#!/usr/bin/env bash
# Throughput of the simulated provider with limits off and zero latency.
# Needs wrk (Debian: apt-get install -y wrk) and curl. Usage: bench/mock/run.sh [DURATION] [CONNECTIONS]
# Results are recorded in docs/BENCHMARKS.md (issue 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-15s}
CONNECTIONS=${2:-64}

# PACER_MOCK_BIN=path skips the build and benchmarks that binary instead.
BIN=${PACER_MOCK_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release -q -p pacer-mock --example serve
  BIN=target/release/examples/serve
fi
OUT=$(mktemp)
"$BIN" --listen 127.0.0.1:0 >"$OUT" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; rm -f "$OUT"' EXIT
for _ in $(seq 50); do [ -s "$OUT" ] && break; sleep 0.1; done
ADDR=$(head -n1 "$OUT" | sed 's/^listening on //')
[ -n "$ADDR" ] || { echo "the mock did not start" >&2; exit 1; }
echo "machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/ \{2,\}/ /g')"
echo "server:  $ADDR"

echo "== POST /v1/chat/completions, 1 wrk thread, $CONNECTIONS connections, $DURATION"
wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/mock/chat.lua "$ADDR/v1/chat/completions"
echo "== same, 2 wrk threads"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/mock/chat.lua "$ADDR/v1/chat/completions"
echo "== the mock's own count"
curl -s "$ADDR/mock/stats" | head -c 400; echo
