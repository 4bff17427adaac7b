#!/usr/bin/env bash
# Overhead benchmark: how fast `pacer run` pushes requests, with durable state
# (SQLite WAL + fdatasync'd output), against a mock with no limits and no
# latency, and what it costs in CPU.
#
#   bench/run/overhead.sh            # 100,000 requests at --concurrency 64, then 256
#   N=20000 CONCURRENCIES="64" REPEATS=1 bench/run/overhead.sh
#
# Each concurrency is run REPEATS (3) times and the median reported: on a
# small shared machine, single runs vary by +-30%.
# Reports, per concurrency: requests/s over the whole process (import and
# start-up included), requests/s of the sending phase alone (first to last
# request seen by the mock), CPU seconds (user+sys, /usr/bin/time -v) per
# 1,000 requests, peak RSS; the mock's own CPU; and, if wrk is installed, what
# a bare load generator gets from the same mock (the ceiling on this machine).
# Target: >= 5,000 requests/s.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-100000}"
CONCURRENCIES="${CONCURRENCIES:-64 256}"
REPEATS="${REPEATS:-3}"
WRK_SECONDS="${WRK_SECONDS:-10}"
IN="$WORK/overhead-$N.jsonl"
gen "$IN" "$N" short

proc_cpu() { # PID -> utime+stime in seconds
  python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$1"
}

RUNS=()
for C in $CONCURRENCIES; do
for REP in $(seq "$REPEATS"); do
  OUT="$WORK/overhead-c$C.results.jsonl"
  fresh "$OUT"
  start_mock
  M0=$(proc_cpu "$MOCK_PID")
  echo "overhead: $N requests, --concurrency $C, run $REP/$REPEATS" >&2
  set +e
  /usr/bin/time -v -o "$WORK/overhead-c$C.time" timeout 900 "$PACER" run "$IN" -o "$OUT" \
    --base-url "$MOCK_URL/v1" --concurrency "$C" --json --progress none \
    >"$WORK/overhead-c$C.summary.json" 2>"$WORK/overhead-c$C.stderr"
  RC=$?
  set -e
  M1=$(proc_cpu "$MOCK_PID")
  STATS=$(mock_stats)
  FIRST=$(python3 "$BENCH_DIR/mockctl.py" first-after "$MOCK_URL" 1)   # seq 0 is the key check
  LAST=$(python3 "$BENCH_DIR/mockctl.py" first-after "$MOCK_URL" "$N")
  RUNS+=("$(python3 - "$C" "$RC" "$WORK/overhead-c$C.summary.json" "$(python3 "$BENCH_DIR/timev.py" "$WORK/overhead-c$C.time")" \
      "$STATS" "$FIRST" "$LAST" "$M0" "$M1" "$N" "$OUT" <<'PY'
import json, sys
c, rc, summ, timev, stats, first, last, m0, m1, n, out = sys.argv[1:]
n = int(n)
try: summary = json.load(open(summ))
except Exception: summary = {}
t = json.loads(timev)
first = json.loads(first) if first else {}
last = json.loads(last) if last else {}
send_s = (last.get("at_ms", 0) - first.get("at_ms", 0)) / 1000 if first and last else None
wall = t.get("elapsed_s")
print(json.dumps({
  "concurrency": int(c), "load_1m_after": round(__import__("os").getloadavg()[0], 2), "exit_code": int(rc), "requests": n,
  "process_elapsed_s": wall, "engine_wall_s": summary.get("wall_s"),
  "requests_per_s": round(n / wall, 1) if wall else None,
  "send_phase_s": send_s,
  "send_phase_requests_per_s": round((n - 1) / send_s, 1) if send_s else None,
  "cpu_user_s": t.get("user_s"), "cpu_sys_s": t.get("sys_s"),
  "cpu_s_per_1000": round(t["cpu_s"] / n * 1000, 4) if "cpu_s" in t else None,
  "max_rss_mb": t.get("max_rss_mb"),
  "mock_cpu_s": round(float(m1) - float(m0), 2),
  "mock_requests": json.loads(stats)["requests"], "mock_by_status": json.loads(stats)["by_status"],
  "mock_duplicate_requests": json.loads(stats)["duplicate_requests"],
  "output_lines": sum(1 for _ in open(out)),
  "summary": summary,
}))
PY
)")
  echo "  ${RUNS[-1]:0:400}" >&2
done
done

WRK_RES="[]"
if command -v wrk >/dev/null; then
  start_mock
  WRK_ROWS=()
  for C in $CONCURRENCIES; do
    echo "overhead: wrk -t1 -c$C -d${WRK_SECONDS}s against the mock" >&2
    M0=$(proc_cpu "$MOCK_PID")
    W=$(timeout $((WRK_SECONDS + 30)) wrk -t1 -c"$C" -d"${WRK_SECONDS}s" -s "$BENCH_DIR/wrk-post.lua" "$MOCK_URL/v1/chat/completions" 2>&1 || true)
    M1=$(proc_cpu "$MOCK_PID")
    RPS=$(awk '/^Requests\/sec:/{print $2}' <<<"$W")
    NON2XX=$(awk '/Non-2xx/{print $NF}' <<<"$W")
    WRK_ROWS+=("{\"concurrency\":$C,\"threads\":1,\"seconds\":$WRK_SECONDS,\"requests_per_s\":${RPS:-null},\"non_2xx\":${NON2XX:-0},\"mock_cpu_s\":$(python3 -c "print(round($M1-$M0,2))")}")
    echo "  ${WRK_ROWS[-1]}" >&2
  done
  WRK_RES="[$(IFS=,; echo "${WRK_ROWS[*]}")]"
  stop_mock
fi

MACHINE=$(machine_json)
printf '%s\n' "${RUNS[@]}" >"$WORK/overhead.runs.jsonl"
python3 - "$WRK_RES" "$MACHINE" "$RESULTS/overhead.json" "$WORK/overhead.runs.jsonl" <<'PY'
import json, sys
wrk, machine, dest = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
runs = [json.loads(l) for l in open(sys.argv[4]) if l.strip()]
import statistics
for r in runs:
    r["meets_target"] = bool(r["requests_per_s"] and r["requests_per_s"] >= 5000)
medians = []
for c in sorted({r["concurrency"] for r in runs}):
    rs = [r for r in runs if r["concurrency"] == c]
    med = lambda k: statistics.median([r[k] for r in rs if r[k] is not None]) if any(r[k] is not None for r in rs) else None
    m = {"concurrency": c, "runs": len(rs), "requests_per_s": med("requests_per_s"),
         "send_phase_requests_per_s": med("send_phase_requests_per_s"), "cpu_s_per_1000": med("cpu_s_per_1000"),
         "max_rss_mb": max(r["max_rss_mb"] for r in rs), "all_requests_per_s": [r["requests_per_s"] for r in rs]}
    m["meets_target"] = bool(m["requests_per_s"] and m["requests_per_s"] >= 5000)
    medians.append(m)
json.dump({"benchmark": "overhead", "machine": machine, "medians": medians, "runs": runs, "wrk": wrk}, open(dest, "w"), indent=2)
for r in runs:
    verdict = "met" if r["meets_target"] else "NOT met"
    print(f"overhead c={r['concurrency']}: exit {r['exit_code']}, {r['requests']} requests in {r['process_elapsed_s']} s = "
          f"{r['requests_per_s']} req/s overall (target >= 5000: {verdict}), "
          f"{r['send_phase_requests_per_s']} req/s while sending; {r['cpu_s_per_1000']} CPU s / 1000 req; "
          f"max RSS {r['max_rss_mb']} MB; mock CPU {r['mock_cpu_s']} s")
for m in medians:
    print(f"overhead c={m['concurrency']}: median of {m['runs']}: {m['requests_per_s']} req/s overall {m['all_requests_per_s']} "
          f"(target >= 5000: {'met' if m['meets_target'] else 'NOT met'}), {m['send_phase_requests_per_s']} req/s while sending, "
          f"{m['cpu_s_per_1000']} CPU s / 1000 req, max RSS {m['max_rss_mb']} MB")
for w in wrk:
    print(f"wrk c={w['concurrency']}: {w['requests_per_s']} req/s against the same mock (mock CPU {w['mock_cpu_s']} s in {w['seconds']} s)")
print(f"  -> {dest}")
PY
