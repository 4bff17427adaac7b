#!/usr/bin/env bash
# Issue 4, figure 2: limits in headers, none configured. 1,500 requests
# against `pacer mock --rpm 600` (headers on, the default one-minute bucket,
# which starts full); pacer with no limit flags. Theoretical minimum: the
# first 600 go at once, the other 900 at 10/s: (1500 - 600) / 10 = 90 s.
#   bench/adaptive/headers.sh [N=1500]
source "$(dirname "$0")/lib.sh"
n=${1:-1500}
RES="$AM_LIB_DIR/results"; mkdir -p "$RES"
in="$WORK/headers-$n.jsonl"
[[ -f "$in" ]] || python3 "$AM_LIB_DIR/gen_batch.py" "$n" "$in"
out="$WORK/headers.out.jsonl"; fresh "$out"
start_mock headers --rpm 600
cmd=("$PACER" run "$in" -o "$out" --base-url "$MOCK_URL/v1" --json --progress plain)
set +e
timeout 900 "${cmd[@]}" >"$WORK/headers.summary.json" 2>"$WORK/headers.stderr" &
pid=$!; track "$pid"; wait "$pid"; rc=$?
set -e
python3 "$AM_LIB_DIR/mocklog.py" dump "$MOCK_URL" "$WORK/headers.log.jsonl" >/dev/null
python3 - "$RES/headers.json" "$rc" "$n" "${cmd[*]}" "$(curl -s "$MOCK_URL/mock/stats")" \
  "$(cat "$WORK/headers.summary.json" || echo null)" \
  "$(python3 "$AM_LIB_DIR/mocklog.py" span "$WORK/headers.log.jsonl")" \
  "$(python3 "$AM_LIB_DIR/paces.py" "$WORK/headers.stderr")" "$(machine_json)" <<'PY'
import json, sys
path, rc, n, cmd, stats, summary, span, paces, machine = sys.argv[1:]
n = int(n); summary = json.loads(summary or "null"); span = json.loads(span)
tmin = (n - 600) / 10
rec = {"figure": "issue 4 / limits in headers, none configured", "mock_flags": "--rpm 600",
       "pacer_command": cmd, "exit_code": int(rc), "summary": summary, "mock_stats": json.loads(stats),
       "mock_log_span": span, "pace_trajectory": json.loads(paces), "theoretical_min_s": tmin,
       "ratio_wall_s": summary["wall_s"] / tmin if summary else None,
       "ratio_mock_span": span["span_s"] / tmin,
       "r429": span["by_status"].get("429", 0), "machine": json.loads(machine)}
rec["target_le_1_05"] = rec["ratio_wall_s"] is not None and rec["ratio_wall_s"] <= 1.05
json.dump(rec, open(path, "w"), indent=1)
print(json.dumps({k: rec[k] for k in ("exit_code", "theoretical_min_s", "ratio_wall_s", "ratio_mock_span", "r429", "target_le_1_05")}
                 | {"wall_s": summary and summary["wall_s"], "span_s": span["span_s"]}))
PY
