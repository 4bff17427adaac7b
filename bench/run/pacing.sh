#!/usr/bin/env bash
# Pacing benchmark: does `pacer run` finish as fast as the provider's limit
# allows, with (almost) no 429s?
#
#   bench/run/pacing.sh rpm   # 1,500 short requests, --rpm 600 on both sides
#   bench/run/pacing.sh tpm   # mixed-size prompts, --tpm on both sides
#
# Theoretical minimum: what does not fit in the provider's first burst,
# divided by the rate. The mock's buckets start full with one minute's worth
# (its --burst default), so:
#   rpm: (N - RPM) / (RPM / 60 s)                        = (1500 - 600) / 10 = 90 s
#   tpm: (sum of charges - TPM) / (TPM / 60 s), a charge being what the mock
#        bills at admission: prompt tokens + max_tokens (its tokens_charged).
# Targets: wall / minimum <= 1.05, 429s <= 1% of requests.
# Environment: N (requests), RPM, TPM, CONCURRENCY, MAX_TOKENS, LATENCY (ms).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODE="${1:-rpm}"
LATENCY="${LATENCY:-50}"
CONCURRENCY="${CONCURRENCY:-50}"
case "$MODE" in
  rpm)
    N="${N:-1500}"; RPM="${RPM:-600}"
    IN="$WORK/pacing-rpm-$N.jsonl"; gen "$IN" "$N" short
    MOCK_FLAGS=(--rpm "$RPM" --latency "$LATENCY")
    RUN_FLAGS=(--rpm "$RPM")
    ;;
  tpm)
    # Mixed prompts average ~400 tokens + max_tokens 100: ~500 a request, so
    # 1,500 requests are ~750k tokens; at 300k tpm the first burst covers 40%
    # and the rest takes ~90 s, as in the rpm case.
    N="${N:-1500}"; TPM="${TPM:-300000}"; MAX_TOKENS="${MAX_TOKENS:-100}"
    IN="$WORK/pacing-tpm-$N-$MAX_TOKENS.jsonl"; gen "$IN" "$N" mixed --max-tokens "$MAX_TOKENS"
    MOCK_FLAGS=(--tpm "$TPM" --latency "$LATENCY")
    RUN_FLAGS=(--tpm "$TPM")
    ;;
  *) echo "usage: $0 rpm|tpm" >&2; exit 64 ;;
esac

OUT="$WORK/pacing-$MODE.results.jsonl"
fresh "$OUT"
start_mock "${MOCK_FLAGS[@]}"
ESTIMATE=$("$PACER" estimate "$IN" --json 2>/dev/null || echo '{}')

echo "pacing/$MODE: $N requests, mock ${MOCK_FLAGS[*]}, pacer ${RUN_FLAGS[*]} --concurrency $CONCURRENCY" >&2
set +e
# Bounded: a run that is more than 3x slower than the minimum is a failure anyway.
timeout 600 "$PACER" run "$IN" -o "$OUT" --base-url "$MOCK_URL/v1" "${RUN_FLAGS[@]}" \
  --concurrency "$CONCURRENCY" --json --progress none >"$WORK/pacing-$MODE.summary.json" 2>"$WORK/pacing-$MODE.stderr"
RC=$?
set -e
STATS=$(mock_stats)
MACHINE=$(machine_json)

python3 - "$MODE" "$N" "${RPM:-0}" "${TPM:-0}" "$RC" "$WORK/pacing-$MODE.summary.json" "$STATS" "$MACHINE" "$ESTIMATE" \
  "$OUT" "$LATENCY" "$CONCURRENCY" "${MAX_TOKENS:-16}" "$RESULTS/pacing-$MODE.json" <<'PY'
import json, sys
mode, n, rpm, tpm, rc, summ_path, stats, machine, estimate, out, latency, conc, max_tokens, dest = sys.argv[1:]
n, rpm, tpm, rc = int(n), float(rpm), float(tpm), int(rc)
try:
    summary = json.load(open(summ_path))
except Exception:
    summary = {}
stats, machine = json.loads(stats), json.loads(machine)
try:
    estimate = json.loads(estimate)
except Exception:
    estimate = {}
lines = sum(1 for _ in open(out)) if rc == 0 else None
if mode == "rpm":
    minimum = (n - rpm) / (rpm / 60)
    basis = {"requests": n, "first_burst": rpm, "rate_per_s": rpm / 60}
else:
    charged = stats["tokens_charged"]
    minimum = (charged - tpm) / (tpm / 60)
    basis = {"tokens_charged": charged, "first_burst": tpm, "rate_per_s": tpm / 60,
             "estimate_input_tokens": estimate.get("input_tokens"),
             "estimate_max_output_tokens": estimate.get("max_output_tokens")}
wall = summary.get("wall_s")
r429 = stats["by_status"].get("429", 0)
res = {
    "benchmark": f"pacing-{mode}", "machine": machine, "exit_code": rc,
    "requests": n, "rpm": rpm or None, "tpm": tpm or None, "mock_latency_ms": int(latency),
    "concurrency": int(conc), "max_tokens": int(max_tokens),
    "wall_s": wall, "theoretical_min_s": round(minimum, 3), "basis": basis,
    "ratio": round(wall / minimum, 4) if wall else None,
    "mock_requests": stats["requests"], "mock_429": r429,
    "share_429": round(r429 / n, 4), "output_lines": lines,
    "summary": summary, "mock_stats": stats,
}
res["meets_wall_target"] = res["ratio"] is not None and res["ratio"] <= 1.05
res["meets_429_target"] = res["share_429"] <= 0.01
json.dump(res, open(dest, "w"), indent=2)
print(f"pacing/{mode}: exit {rc}, wall {wall} s, minimum {minimum:.1f} s, ratio {res['ratio']} "
      f"(target <= 1.05: {'met' if res['meets_wall_target'] else 'NOT met'}), "
      f"429s {r429}/{n} = {100*r429/n:.2f}% (target <= 1%: {'met' if res['meets_429_target'] else 'NOT met'}), "
      f"output lines {lines}")
print(f"  -> {dest}")
PY
