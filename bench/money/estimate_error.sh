#!/usr/bin/env bash
# Issue 5, figure 4: estimate error (tokens, cost) on a mixed 1,000-request
# input. `pacer estimate --json` vs. what a real run against `pacer mock`
# (no limits) reports: the mock's prompt_tokens stat, the run's usage and
# cost_usd. Plus the independent anchors of cookbook.py (OpenAI's own counts).
#   bench/money/estimate_error.sh [N=1000]
source "$(dirname "$0")/../adaptive/lib.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
n=${1:-1000}
RES="$HERE/results"; mkdir -p "$RES"
in="$WORK/mixed-$n.jsonl"
python3 "$HERE/gen_mixed.py" "$n" "$in"
est_cmd=("$PACER" estimate "$in" --json)
"${est_cmd[@]}" >"$WORK/mixed.estimate.json"

start_mock estimate
out="$WORK/mixed.out.jsonl"; fresh "$out"
run_cmd=("$PACER" run "$in" -o "$out" --base-url "$MOCK_URL/v1" --json --progress none)
set +e
timeout 600 "${run_cmd[@]}" >"$WORK/mixed.summary.json" 2>"$WORK/mixed.stderr"; rc=$?
set -e
curl -s "$MOCK_URL/mock/stats" >"$WORK/mixed.stats.json"

python3 "$HERE/cookbook.py" "$WORK/cookbook"
anchors="[]"
anchors=$(python3 - "$PACER" "$WORK/cookbook/cases.json" <<'PY'
import json, subprocess, sys
pacer, cases = sys.argv[1], json.load(open(sys.argv[2]))
for c in cases:
    e = json.loads(subprocess.run([pacer, "estimate", c["file"], "--json"], capture_output=True, text=True, timeout=60).stdout)
    c["pacer_estimate"] = e["input_tokens"]
    c["error_pct"] = round(100 * (e["input_tokens"] - c["openai_api_prompt_tokens"]) / c["openai_api_prompt_tokens"], 1)
    del c["file"]
print(json.dumps(cases))
PY
)

python3 - "$RES/estimate-error.json" "$rc" "${est_cmd[*]}" "${run_cmd[*]}" "$WORK/mixed.estimate.json" \
  "$WORK/mixed.summary.json" "$WORK/mixed.stats.json" "$in" "$out" "$anchors" "$(machine_json)" <<'PY'
import json, sys
path, rc, est_cmd, run_cmd, est_f, sum_f, stats_f, in_f, out_f, anchors, machine = sys.argv[1:]
est = json.load(open(est_f)); summ = json.load(open(sum_f)); stats = json.load(open(stats_f))
price = {m["model"]: m["price"] for m in est["by_model"]}
model_of = {}
for line in open(in_f):
    r = json.loads(line); model_of[r["custom_id"]] = r["body"]["model"]
# Real usage per model, from the result lines (one per request).
real = {}
status = {}
for line in open(out_f):
    r = json.loads(line)
    resp = r.get("response") or {}
    status[str(resp.get("status_code"))] = status.get(str(resp.get("status_code")), 0) + 1
    u = (resp.get("body") or {}).get("usage") or {}
    m = model_of[r["custom_id"]]
    d = real.setdefault(m, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
    d["requests"] += 1
    d["prompt_tokens"] += u.get("prompt_tokens", 0)
    d["completion_tokens"] += u.get("completion_tokens", 0)
cost_from_usage = 0.0
by_model = []
for m in est["by_model"]:
    r = real.get(m["model"], {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0})
    p = price[m["model"]]
    c = (r["prompt_tokens"] * p["input"] + r["completion_tokens"] * p["output"]) / 1e6
    cost_from_usage += c
    by_model.append({"model": m["model"], "requests": m["requests"], "est_input_tokens": m["input_tokens"],
                     "real_prompt_tokens": r["prompt_tokens"],
                     "token_error_pct": round(100 * (m["input_tokens"] - r["prompt_tokens"]) / max(1, r["prompt_tokens"]), 3),
                     "cost_min_usd": m["cost_min_usd"], "cost_max_usd": m["cost_max_usd"], "real_cost_from_usage_usd": c})
real_prompt = sum(r["prompt_tokens"] for r in real.values())
real_completion = sum(r["completion_tokens"] for r in real.values())
cmin, cmax, cexp = est["cost_min_usd"], est["cost_max_usd"], est.get("cost_expected_usd")
cost = summ["cost_usd"]
rec = {
    "figure": "issue 5 / estimate error", "estimate_command": est_cmd, "run_command": run_cmd,
    "exit_code": int(rc), "result_status": status,
    "estimate": {k: est[k] for k in ("requests", "input_tokens", "expected_output_tokens", "max_output_tokens",
                                     "cost_min_usd", "cost_expected_usd", "cost_max_usd")},
    "mock_stats": {k: stats[k] for k in ("requests", "by_status", "prompt_tokens", "completion_tokens", "tokens_charged")},
    "summary": summ,
    "input_tokens_vs_mock_prompt_tokens_pct": round(100 * (est["input_tokens"] - stats["prompt_tokens"]) / stats["prompt_tokens"], 4),
    "input_tokens_vs_result_usage_pct": round(100 * (est["input_tokens"] - real_prompt) / real_prompt, 4),
    "max_output_tokens_vs_real_completion": {"max": est["max_output_tokens"], "real": real_completion},
    "cost_real_usd": cost,
    "cost_from_result_usage_usd": cost_from_usage,
    "cost_summary_vs_usage_pct": round(100 * (cost - cost_from_usage) / cost_from_usage, 4),
    "cost_position_in_range": round((cost - cmin) / (cmax - cmin), 4),
    "cost_within_range": cmin <= cost <= cmax,
    "cost_expected_error_pct": round(100 * (cexp - cost) / cost, 2) if cexp else None,
    "by_model": by_model,
    "openai_cookbook_anchors": json.loads(anchors),
    "machine": json.loads(machine),
}
json.dump(rec, open(path, "w"), indent=1)
print(json.dumps({k: rec[k] for k in ("exit_code", "result_status", "input_tokens_vs_mock_prompt_tokens_pct",
    "input_tokens_vs_result_usage_pct", "cost_real_usd", "cost_from_result_usage_usd", "cost_position_in_range",
    "cost_within_range", "cost_expected_error_pct")} | {"est": rec["estimate"]}))
for a in rec["openai_cookbook_anchors"]:
    print(json.dumps(a))
PY
