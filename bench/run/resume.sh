#!/usr/bin/env bash
# Resume benchmark: time from `pacer run` starting on a 1,000,000-row state
# to the first request the provider sees.
#
#   bench/run/resume.sh                  # 1M rows, 3 resumes
#   N=200000 REPEATS=2 bench/run/resume.sh
#
# 1. A crash: a fresh run imports the 1M-line input (short prompts), sends
#    KILL_AFTER requests to a fast mock, and is SIGKILLed (some rows are left
#    in flight, as after a real crash).
# 2. REPEATS times: the same command again; the clock runs from process start
#    until the mock has seen the first chat completion (its stats and log
#    polled every ~2 ms); then SIGKILL again after a few hundred requests, so
#    each resume also finds in-flight rows to requeue.
# 3. A breakdown of the start-up work on the final state (resume_breakdown.py).
# KILL_AFTER=900000 TAG=late measures a resume near the end of the job
# instead (most rows done: a bigger, sparser state file).
# Target: <= 2 s.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-1000000}"
REPEATS="${REPEATS:-3}"
KILL_AFTER="${KILL_AFTER:-2000}"
TAG="${TAG:+-$TAG}"
CONCURRENCY="${CONCURRENCY:-64}"
IN="$WORK/short-$N.jsonl"
gen "$IN" "$N" short
OUT="$WORK/resume$TAG.results.jsonl"
STATE="${OUT%.jsonl}.pacer.db"
fresh "$OUT"
start_mock
RUN=("$PACER" run "$IN" -o "$OUT" --base-url "$MOCK_URL/v1" --concurrency "$CONCURRENCY" --json --progress none)

echo "resume: creating a $N-row state (import, $KILL_AFTER requests, SIGKILL)" >&2
CREATE=$(python3 "$BENCH_DIR/runprobe.py" --mock "$MOCK_URL" --first-post --kill-after-posts "$KILL_AFTER" \
  --deadline 900 --stderr "$WORK/resume$TAG-create.stderr" -- "${RUN[@]}")
echo "  $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print({k: d.get(k) for k in ("first_post_s","sigkill_at_s","mock_requests_at_kill","max_rss_mb")})' "$CREATE")" >&2

RESUMES=()
for i in $(seq "$REPEATS"); do
  R=$(python3 "$BENCH_DIR/runprobe.py" --mock "$MOCK_URL" --first-post --kill-after-posts 500 \
    --deadline 120 --stderr "$WORK/resume$TAG-$i.stderr" -- "${RUN[@]}")
  RESUMES+=("$R")
  echo "  resume $i: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print({k: d.get(k) for k in ("first_request_any_s","first_post_s","sigkill_at_s","max_rss_mb","exit_code")})' "$R")" >&2
done

STATUS_T0=$(date +%s.%N)
"$PACER" status "$STATE" --json >"$WORK/resume$TAG-status.json" 2>&1 || true
STATUS_S=$(python3 -c "import sys; print(round($(date +%s.%N) - $STATUS_T0, 3))")
BREAKDOWN=$(python3 "$BENCH_DIR/resume_breakdown.py" "$STATE" "$IN")
MACHINE=$(machine_json)

printf '%s\n' "${RESUMES[@]}" >"$WORK/resume$TAG.runs.jsonl"
python3 - "$CREATE" "$BREAKDOWN" "$MACHINE" "$STATUS_S" "$STATE" "$N" "$RESULTS/resume$TAG.json" "$WORK/resume$TAG.runs.jsonl" <<'PY'
import json, os, statistics, sys
create, breakdown, machine = (json.loads(x) for x in sys.argv[1:4])
status_s, state, n, dest = float(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7]
resumes = [json.loads(l) for l in open(sys.argv[8]) if l.strip()]
firsts = [r.get("first_post_s") for r in resumes]
ok = [f for f in firsts if f is not None]
keys = ("first_request_any_s", "first_post_s", "sigkill_at_s", "mock_requests_at_kill", "max_rss_mb", "user_s", "sys_s", "exit_code")
res = {
  "benchmark": "resume", "machine": machine, "rows": n, "state_bytes": os.path.getsize(state),
  "create": {k: create.get(k) for k in ("first_post_s", "sigkill_at_s", "mock_requests_at_kill", "max_rss_mb", "user_s", "sys_s")},
  "resumes": [{k: r.get(k) for k in keys} for r in resumes],
  "first_post_s_median": statistics.median(ok) if ok else None,
  "first_post_s_max": max(ok) if ok else None,
  "pacer_status_s": status_s, "breakdown": breakdown,
}
res["meets_target"] = bool(ok) and len(ok) == len(firsts) and max(ok) <= 2.0
json.dump(res, open(dest, "w"), indent=2)
verdict = "met" if res["meets_target"] else "NOT met"
print(f"resume: {n}-row state ({res['state_bytes'] >> 20} MiB); start to first request: {firsts} s, "
      f"median {res['first_post_s_median']} s (target <= 2 s: {verdict}); pacer status: {status_s} s")
for s in breakdown["steps"]:
    print(f"  {s['s']:8.3f} s  {s['step']}")
print(f"  -> {dest}")
PY
