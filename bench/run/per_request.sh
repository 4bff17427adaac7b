#!/usr/bin/env bash
# Per-request cost (issue 9): `pacer run` against a static nginx upstream
# (bench/run/static_upstream.sh), realistic ~300-token prompts, no limits, no
# key check. Measures the whole process (import, sending, closing):
# requests/s, CPU seconds (user+sys) per 1,000 requests, peak RSS.
#
#   bench/run/per_request.sh                  # 200,000 requests, --concurrency 256, 1 run
#   N=50000 REPEATS=3 CONCURRENCY=64 bench/run/per_request.sh
#
# Each run is killed after RUN_TIMEOUT (600) seconds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-200000}"
CONCURRENCY="${CONCURRENCY:-256}"
REPEATS="${REPEATS:-1}"
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"
MODE="${MODE:-realistic}"
IN="$WORK/$MODE-$N.jsonl"
gen "$IN" "$N" "$MODE"

STATIC_DIR="$WORK/static-upstream.$$"
export STATIC_DIR
URL=$("$BENCH_DIR/static_upstream.sh" start)
trap '"$BENCH_DIR/static_upstream.sh" stop; cleanup' EXIT

for REP in $(seq "$REPEATS"); do
  OUT="$WORK/per-request.results.jsonl"
  fresh "$OUT"
  set +e
  /usr/bin/time -v -o "$WORK/per-request.time" timeout "$RUN_TIMEOUT" "$PACER" run "$IN" -o "$OUT" \
    --base-url "$URL/v1" --concurrency "$CONCURRENCY" --no-verify --json --progress none \
    >"$WORK/per-request.summary.json" 2>"$WORK/per-request.stderr"
  RC=$?
  set -e
  python3 - "$RC" "$N" "$CONCURRENCY" "$OUT" "$(python3 "$BENCH_DIR/timev.py" "$WORK/per-request.time")" <<'PY'
import json, sys
rc, n, c, out, t = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
lines = sum(1 for _ in open(out))
print(f"per-request: exit {rc}, {n} requests, c={c}: {t['elapsed_s']} s = {n / t['elapsed_s']:.0f} req/s; "
      f"CPU {t['user_s']} + {t['sys_s']} s = {t['cpu_s'] / n * 1000:.3f} CPU s / 1000; "
      f"max RSS {t['max_rss_mb']} MB; {lines} output lines")
PY
done
