#!/usr/bin/env bash
# Issue 5, figure 5: budget overshoot over 20 runs with random caps.
# Input: the mixed 1,000-request file of gen_mixed.py. Caps: uniform between
# 10% and 90% of `pacer estimate`'s cost_max_usd, fixed seed. Each run starts
# from scratch (a new output and state) against one `pacer mock` with a
# heavy-tailed latency (so many requests are in flight when the cap nears).
#
# "Spent" is measured twice: pacer's summary cost_usd, and the provider's
# view: every 200 the mock logged for the run, priced with that request's
# real usage (taken from a reference run without a cap; the mock's replies
# are deterministic). Overshoot = spent - cap.
#
# BASE=max (the brief): caps between 10% and 90% of the estimate's cost_max.
# On the mock the real bill is about a third of cost_max (its replies are
# short), so many of those caps are never reached; BASE=real takes 10-90% of
# the reference run's real cost instead, so every run meets its cap.
#   bench/money/budget.sh [RUNS=20] [SEED=20261129] [LATENCY_MS=100] [BASE=max|real]
source "$(dirname "$0")/../adaptive/lib.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
runs=${1:-20} seed=${2:-20261129} lat=${3:-100} base=${4:-max}
RES="$HERE/results"; mkdir -p "$RES"
in="$WORK/mixed-1000.jsonl"
python3 "$HERE/gen_mixed.py" 1000 "$in"
"$PACER" estimate "$in" --json >"$WORK/budget.estimate.json"

start_mock budget --latency "$lat" --latency-tail --seed 7
# Reference run: the real usage of every request.
ref="$WORK/budget.ref.jsonl"; fresh "$ref"
timeout 600 "$PACER" run "$in" -o "$ref" --base-url "$MOCK_URL/v1" --json --progress none >"$WORK/budget.ref.summary.json"

caps=$(python3 - "$WORK/budget.estimate.json" "$runs" "$seed" "$base" "$WORK/budget.ref.summary.json" <<'PY'
import json, random, sys
est = json.load(open(sys.argv[1])); rng = random.Random(int(sys.argv[3]))
full = est["cost_max_usd"] if sys.argv[4] == "max" else json.load(open(sys.argv[5]))["cost_usd"]
print(" ".join(f"{rng.uniform(0.1, 0.9) * full:.6f}" for _ in range(int(sys.argv[2]))))
PY
)
: >"$WORK/budget.runs.jsonl"
echo "caps ($base): $caps" >&2
i=0
for cap in $caps; do
  i=$((i + 1))
  out="$WORK/budget.run$i.jsonl"; fresh "$out"
  seq0=$(curl -s "$MOCK_URL/mock/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  set +e
  timeout 600 "$PACER" run "$in" -o "$out" --base-url "$MOCK_URL/v1" --json --progress none --max-cost "$cap" \
    >"$WORK/budget.run$i.summary.json" 2>"$WORK/budget.run$i.stderr"; rc=$?
  set -e
  sleep 0.5  # let answers already on the wire reach the log (all bounded by the mock's latency)
  python3 - "$cap" "$rc" "$seq0" "$MOCK_URL" "$WORK/budget.run$i.summary.json" "$ref" "$WORK/budget.estimate.json" "$in" <<'PY' >>"$WORK/budget.runs.jsonl"
import json, sys, urllib.request
cap, rc, seq0, url, sum_f, ref_f, est_f, in_f = sys.argv[1:]
cap = float(cap)
summ = json.load(open(sum_f))
price = {m["model"]: m["price"] for m in json.load(open(est_f))["by_model"]}
model = {}
for line in open(in_f):
    r = json.loads(line); model[r["custom_id"]] = r["body"]["model"]
cost = {}
for line in open(ref_f):
    r = json.loads(line); u = r["response"]["body"]["usage"]; p = price[model[r["custom_id"]]]
    cost[r["custom_id"]] = (u.get("prompt_tokens", 0) * p["input"] + u.get("completion_tokens", 0) * p["output"]) / 1e6
rows = json.loads(urllib.request.urlopen(f"{url}/mock/log?since={seq0}&limit=100000", timeout=30).read())
ok = [r for r in rows if r["status"] == 200 and r["path"] != "/v1/models"]
provider_spent = sum(cost[r["client_request_id"]] for r in ok)
print(json.dumps({"cap": cap, "exit_code": int(rc), "stop_reason": summ.get("stop_reason"),
                  "succeeded": summ.get("succeeded"), "sent": summ.get("sent"),
                  "spent_summary": summ["cost_usd"], "spent_provider": provider_spent,
                  "answered_200": len(ok),
                  "overshoot_summary": summ["cost_usd"] - cap, "overshoot_provider": provider_spent - cap,
                  "spent_over_cap": summ["cost_usd"] / cap, "provider_over_cap": provider_spent / cap}))
PY
  tail -n1 "$WORK/budget.runs.jsonl" >&2
done

python3 - "$RES/budget-$base.json" "$WORK/budget.runs.jsonl" "$WORK/budget.estimate.json" "$WORK/budget.ref.summary.json" \
  "$seed" "$lat" "$base" "$(machine_json)" <<'PY'
import json, statistics as st, sys
path, runs_f, est_f, ref_f, seed, lat, base, machine = sys.argv[1:]
runs = [json.loads(l) for l in open(runs_f)]
est = json.load(open(est_f))
def agg(key):
    v = [r[key] for r in runs]
    return {"max": max(v), "mean": st.mean(v), "min": min(v)}
stopped = [r for r in runs if r["exit_code"] == 2]
rec = {"figure": "issue 5 / budget overshoot", "seed": int(seed), "caps_base": base,
       "caps": "uniform 10%-90% of " + ("the estimate's cost_max_usd" if base == "max" else "the reference run's real cost"), "mock_flags": f"--latency {lat} --latency-tail --seed 7",
       "pacer_command": "pacer run mixed-1000.jsonl -o NEW --base-url MOCK/v1 --json --progress none --max-cost CAP",
       "cost_max_usd": est["cost_max_usd"], "cost_min_usd": est["cost_min_usd"],
       "reference_full_run_cost_usd": json.load(open(ref_f))["cost_usd"],
       "runs": runs, "overshoot_summary_usd": agg("overshoot_summary"), "overshoot_provider_usd": agg("overshoot_provider"),
       "spent_over_cap": agg("spent_over_cap"), "provider_over_cap": agg("provider_over_cap"),
       "exit_codes": sorted({r["exit_code"] for r in runs}), "runs_stopped_by_cap": len(stopped),
       "stopped_spent_over_cap": {"max": max(r["spent_over_cap"] for r in stopped), "mean": st.mean(r["spent_over_cap"] for r in stopped),
                                  "min": min(r["spent_over_cap"] for r in stopped)} if stopped else None,
       "machine": json.loads(machine)}
rec["target_no_overshoot"] = rec["overshoot_provider_usd"]["max"] <= 1e-9 and rec["overshoot_summary_usd"]["max"] <= 1e-9
json.dump(rec, open(path, "w"), indent=1)
print(json.dumps({k: rec[k] for k in ("cost_max_usd", "reference_full_run_cost_usd", "overshoot_summary_usd",
    "overshoot_provider_usd", "spent_over_cap", "provider_over_cap", "exit_codes", "runs_stopped_by_cap", "stopped_spent_over_cap", "target_no_overshoot")}))
PY
