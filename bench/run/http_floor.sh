#!/usr/bin/env bash
# The floor under pacer's per-request cost (issue 9): the same requests as
# bench/run/per_request.sh sent to the same static nginx upstream by the same
# HTTP client (reqwest + rustls, HTTP/1.1, same concurrency) with nothing
# else: no state, no pacing, no output (crates/pacer/examples/http_floor.rs).
# Whatever `pacer run` costs above this is pacer's own.
#
#   bench/run/http_floor.sh                     # 200,000 requests, concurrency 256, 1 run
#   N=20000 REPEATS=3 bench/run/http_floor.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-200000}"
CONCURRENCY="${CONCURRENCY:-256}"
REPEATS="${REPEATS:-1}"
MODE="${MODE:-realistic}"
IN="$WORK/$MODE-$N.jsonl"
gen "$IN" "$N" "$MODE"

(cd "$ROOT" && cargo build --release --example http_floor -p pacer >/dev/null 2>&1) || {
  echo "bench: could not build the http_floor example" >&2
  exit 1
}
FLOOR="$ROOT/target/release/examples/http_floor"

STATIC_DIR="$WORK/static-upstream.$$"
export STATIC_DIR
URL=$("$BENCH_DIR/static_upstream.sh" start)
trap '"$BENCH_DIR/static_upstream.sh" stop; cleanup' EXIT

for REP in $(seq "$REPEATS"); do
  /usr/bin/time -v -o "$WORK/floor.time" timeout 600 "$FLOOR" "$IN" "$URL/v1/chat/completions" "$CONCURRENCY" \
    >"$WORK/floor.out"
  python3 - "$N" "$CONCURRENCY" "$(python3 "$BENCH_DIR/timev.py" "$WORK/floor.time")" <<'PY'
import json, sys
n, c, t = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
print(f"http floor: {n} requests, c={c}: {t['elapsed_s']} s = {n / t['elapsed_s']:.0f} req/s; "
      f"CPU {t['user_s']} + {t['sys_s']} s = {t['cpu_s'] / n * 1000:.3f} CPU s / 1000; "
      f"max RSS {t['max_rss_mb']} MB (the whole input is held in memory)")
PY
done
