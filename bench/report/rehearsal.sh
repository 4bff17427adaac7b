#!/usr/bin/env bash
# The README's picture: a rehearsal against the simulator, its report, and
# a screenshot of the report in headless Chromium.
#
#   bench/report/rehearsal.sh            # writes docs/report.png
#
# The simulator has an unknown 3,000 rpm limit over one-second windows and
# sends no rate-limit headers (pacer finds the limit from 429s), answers 2%
# of requests with 5xx, and is down from 20 s to 28 s after it starts.
# 3,000 requests; the first run stops at its budget ($0.03), the second
# (same command, higher budget) finishes the job. Then `pacer report`.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../common.sh
source "$BENCH_DIR/../common.sh"
WORK="${BENCH_WORK:-/tmp/pacer-bench}/rehearsal"
PNG="${PNG:-$ROOT/docs/report.png}"
CHROMIUM="${PACER_TEST_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
[[ -x "$CHROMIUM" ]] || { echo "bench: chromium is needed (scripts/test-deps.sh installs it)" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"

"$PACER" mock --listen 127.0.0.1:0 --rpm 3000 --window 1 --hide-headers \
  --error-rate 0.02 --latency 40 --latency-tail --outage 20:8 --seed 7 >mock.out 2>mock.err &
MOCK_PID=$!
trap '_kill_bounded $MOCK_PID' EXIT
for _ in $(seq 100); do grep -q '^listening on' mock.out 2>/dev/null && break; sleep 0.05; done
URL="$(sed -n 's/^listening on //p' mock.out)"
[[ -n "$URL" ]] || { echo "bench: the mock did not start: $(cat mock.err)" >&2; exit 1; }

python3 - <<'PY'
import json
with open("jobs.jsonl", "w") as f:
    for i in range(3000):
        f.write(json.dumps({"custom_id": f"r{i:05}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 50 + i % 100,
                     "messages": [{"role": "user", "content": f"Summarise document {i} in one line."}]}}) + "\n")
PY
set +e
timeout 300 "$PACER" run jobs.jsonl --base-url "$URL/v1" --max-cost 0.03 --progress plain; echo "run 1: exit $?"
sleep 3
timeout 300 "$PACER" run jobs.jsonl --base-url "$URL/v1" --max-cost 0.2 --progress plain; echo "run 2: exit $?"
set -e
"$PACER" report jobs.jsonl -o report.html
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$WORK/chromium" --hide-scrollbars --window-size=1060,1720 \
  --screenshot="$WORK/report.png" "file://$WORK/report.html" 2>/dev/null
cp "$WORK/report.png" "$PNG"
echo "wrote $PNG ($(stat -c %s "$PNG") bytes) from $WORK/report.html" >&2
