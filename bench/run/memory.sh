#!/usr/bin/env bash
# Memory benchmark: peak resident memory of `pacer run` on a 1,000,000-line
# input (short prompts), against a mock with no limits and no latency.
#
#   bench/run/memory.sh                 # 1M lines, at most MEM_SECONDS (600) of running
#   N=200000 MEM_SECONDS=120 bench/run/memory.sh
#
# What is measured: the whole process from start (validation and import of
# the million lines into the state, then sending) until it finishes or
# MEM_SECONDS pass (then SIGINT: a graceful stop). Peak RSS is the kernel's
# ru_maxrss for the process; RSS is also sampled every 200 ms, and the time of
# the first chat completion the mock sees marks the end of the import.
# Target: <= 200 MB.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-1000000}"
MEM_SECONDS="${MEM_SECONDS:-600}"
CONCURRENCY="${CONCURRENCY:-64}"
IN="$WORK/short-$N.jsonl"
gen "$IN" "$N" short
OUT="$WORK/mem.results.jsonl"
fresh "$OUT"
start_mock

echo "memory: $N lines ($(du -h "$IN" | cut -f1)), --concurrency $CONCURRENCY, at most ${MEM_SECONDS}s" >&2
PROBE=$(python3 "$BENCH_DIR/runprobe.py" --mock "$MOCK_URL" --first-post --deadline "$MEM_SECONDS" \
  --stdout "$WORK/mem.summary.json" --stderr "$WORK/mem.stderr" -- \
  "$PACER" run "$IN" -o "$OUT" --base-url "$MOCK_URL/v1" --concurrency "$CONCURRENCY" --json --progress none)
STATS=$(mock_stats)
MACHINE=$(machine_json)
python3 - "$PROBE" "$STATS" "$MACHINE" "$N" "$IN" "$OUT" "$WORK/mem.summary.json" "$RESULTS/memory.json" <<'PY'
import json, os, sys
probe, stats, machine = (json.loads(x) for x in sys.argv[1:4])
n, inp, out, summ, dest = int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]
try: summary = json.load(open(summ))
except Exception: summary = {}
first = probe.get("first_post_s")
import_peak = max((m for t, m in probe["rss_timeline_mb"] if first is None or t <= first), default=None)
state = out[:-len(".jsonl")] + ".pacer.db"
res = {
  "benchmark": "memory", "machine": machine, "lines": n, "input_bytes": os.path.getsize(inp),
  "state_bytes": os.path.getsize(state) if os.path.exists(state) else None,
  "exit_code": probe["exit_code"], "elapsed_s": probe["elapsed_s"],
  "stopped_by_sigint_at_s": probe.get("sigint_at_s"),
  "import_s_until_first_post": first, "max_rss_mb": probe["max_rss_mb"],
  "sampled_peak_rss_until_first_post_mb": import_peak,
  "requests_sent": stats["requests"] - 1, "output_lines": sum(1 for _ in open(out)),
  "cpu_user_s": probe["user_s"], "cpu_sys_s": probe["sys_s"],
  "rss_timeline_mb": probe["rss_timeline_mb"], "summary": summary,
}
res["meets_target"] = res["max_rss_mb"] <= 200
json.dump(res, open(dest, "w"), indent=2)
print(f"memory: {n} lines, exit {res['exit_code']} after {res['elapsed_s']} s "
      f"(SIGINT at {res['stopped_by_sigint_at_s']}); import until first request {first} s; "
      f"{res['output_lines']} results written; peak RSS {res['max_rss_mb']} MB "
      f"(target <= 200 MB: {'met' if res['meets_target'] else 'NOT met'}); "
      f"peak during import {import_peak} MB")
print(f"  -> {dest}")
PY
