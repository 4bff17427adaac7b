#!/usr/bin/env bash
# Issue 4, figure 3: a 30 s outage in a 2-minute job. Mock --rpm 600
# --burst 10 (headers on) --outage 30:30: every request in [30 s, 60 s) of the
# mock's clock is answered 503. Pacer with no limit flags learns 600 rpm.
#   bench/adaptive/outage.sh [N=1200]
source "$(dirname "$0")/lib.sh"
n=${1:-1200}
RES="$AM_LIB_DIR/results"; mkdir -p "$RES"
in="$WORK/outage-$n.jsonl"
[[ -f "$in" ]] || python3 "$AM_LIB_DIR/gen_batch.py" "$n" "$in"
out="$WORK/outage.out.jsonl"; fresh "$out"
start_mock outage --rpm 600 --burst 10 --outage 30:30
cmd=("$PACER" run "$in" -o "$out" --base-url "$MOCK_URL/v1" --json --progress plain)
set +e
timeout 900 "${cmd[@]}" >"$WORK/outage.summary.json" 2>"$WORK/outage.stderr" &
pid=$!; track "$pid"; wait "$pid"; rc=$?
set -e
python3 "$AM_LIB_DIR/mocklog.py" dump "$MOCK_URL" "$WORK/outage.log.jsonl" >/dev/null
# Every request must end succeeded: count result lines by status.
results=$(python3 - "$out" <<'PY'
import json, sys
c = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    s = (r.get("response") or {}).get("status_code") if r.get("error") is None else "error"
    c[str(s)] = c.get(str(s), 0) + 1
print(json.dumps(c))
PY
)
python3 - "$RES/outage.json" "$rc" "$n" "${cmd[*]}" "$(curl -s "$MOCK_URL/mock/stats")" \
  "$(cat "$WORK/outage.summary.json" || echo null)" \
  "$(python3 "$AM_LIB_DIR/mocklog.py" outage "$WORK/outage.log.jsonl" --start 30 --end 60 --limit-rpm 600)" \
  "$results" "$(python3 "$AM_LIB_DIR/paces.py" "$WORK/outage.stderr")" "$(machine_json)" <<'PY'
import json, sys
path, rc, n, cmd, stats, summary, fig, results, paces, machine = sys.argv[1:]
summary = json.loads(summary or "null"); fig = json.loads(fig); results = json.loads(results)
rec = {"figure": "issue 4 / outage", "mock_flags": "--rpm 600 --burst 10 --outage 30:30",
       "pacer_command": cmd, "exit_code": int(rc), "summary": summary, "mock_stats": json.loads(stats),
       "figures": fig, "result_lines_by_status": results, "pace_trajectory": json.loads(paces),
       "all_succeeded": results == {"200": int(n)}, "machine": json.loads(machine)}
rec["target_le_12_during_outage"] = fig["sent_during_outage"] <= 12
json.dump(rec, open(path, "w"), indent=1)
print(json.dumps({"exit_code": int(rc), "all_succeeded": rec["all_succeeded"], "results": results,
                  "wall_s": summary and summary["wall_s"]} |
                 {k: fig[k] for k in ("sent_during_outage", "during_by_status", "first_200_after_recovery_s",
                                      "full_pace_window_start_after_recovery_s", "full_pace_reached_at_s")}))
PY
