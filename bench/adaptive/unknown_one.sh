#!/usr/bin/env bash
# One variant of issue 4, figure 1 (unknown limits): a mock that enforces
# --rpm 600 but sends no rate-limit headers, pacer with no --rpm at all.
#
#   unknown_one.sh NAME N [MOCK FLAGS...]
#   e.g. unknown_one.sh minute 6000 --rpm 600 --hide-headers
#        unknown_one.sh second 6000 --rpm 600 --hide-headers --burst 10
#
# Writes bench/adaptive/results/unknown-NAME.json.
source "$(dirname "$0")/lib.sh"
name=$1 n=$2; shift 2
RES="$AM_LIB_DIR/results"; mkdir -p "$RES"
in="$WORK/unknown-$n.jsonl"
[[ -f "$in" ]] || python3 "$AM_LIB_DIR/gen_batch.py" "$n" "$in"
out="$WORK/unknown-$name.out.jsonl"; fresh "$out"

start_mock "unknown-$name" "$@"
echo "[$name] mock $MOCK_URL ($*), $n requests" >&2
cmd=("$PACER" run "$in" -o "$out" --base-url "$MOCK_URL/v1" --json --progress plain --max-retries 50)
set +e
timeout 1800 "${cmd[@]}" >"$WORK/unknown-$name.summary.json" 2>"$WORK/unknown-$name.stderr" &
pid=$!; track "$pid"; wait "$pid"; rc=$?
set -e
echo "[$name] pacer exit $rc" >&2
python3 "$AM_LIB_DIR/mocklog.py" dump "$MOCK_URL" "$WORK/unknown-$name.log.jsonl" >/dev/null
stats=$(curl -s "$MOCK_URL/mock/stats")
python3 - "$RES/unknown-$name.json" "$rc" "$*" "${cmd[*]}" "$stats" \
  "$(cat "$WORK/unknown-$name.summary.json" || echo null)" \
  "$(python3 "$AM_LIB_DIR/mocklog.py" unknown "$WORK/unknown-$name.log.jsonl" --limit-rpm 600)" \
  "$(python3 "$AM_LIB_DIR/paces.py" "$WORK/unknown-$name.stderr")" "$(machine_json)" <<'PY'
import json, sys
path, rc, mock, cmd, stats, summary, fig, paces, machine = sys.argv[1:]
rec = {"figure": "issue 4 / unknown limits", "mock_flags": mock, "pacer_command": cmd,
       "exit_code": int(rc), "summary": json.loads(summary or "null"), "mock_stats": json.loads(stats),
       "figures": json.loads(fig), "pace_trajectory": json.loads(paces), "machine": json.loads(machine)}
json.dump(rec, open(path, "w"), indent=1)
f = rec["figures"]
print(json.dumps({k: f[k] for k in ("run_span_s", "requests_sent", "accepted", "r429", "share_429",
    "minutes_1_5_share_of_limit", "minutes_0_4_share_of_limit", "time_to_90pct_s", "sustained_90pct_from_s")}))
PY
