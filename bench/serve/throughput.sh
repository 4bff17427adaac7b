#!/usr/bin/env bash
# Pass-through throughput of `pacer serve` with limits off: how many chat
# completions per second the gateway forwards when nothing paces it, against
# what the same load generator gets from the upstream directly.
#
#   bench/serve/throughput.sh
#   CONCURRENCIES="64" SECONDS_PER_RUN=10 bench/serve/throughput.sh
#
# How: the upstream is nginx answering one fixed chat completion
# (bench/run/static_upstream.sh). oha (installed once into target/bench-tools
# if missing) sends as fast as it can (no -q) over C keep-alive connections
# for SECONDS_PER_RUN (15) seconds, for each C in CONCURRENCIES (64 256):
# first directly against nginx (the ceiling of this machine), then through
# `pacer serve --upstream NGINX/v1` with no --rpm/--tpm and no --concurrency
# (SERVE_ARGS adds flags, e.g. SERVE_ARGS="--concurrency 1024" if the
# gateway's default in-flight cap binds). Reported per C: requests/s both
# ways, the gateway's share of the direct rate, p50/p99 latency, non-2xx and
# errors, the gateway's CPU seconds per 1,000 requests and its RSS at the end.
# Results: bench/serve/results/throughput.json.
#
# Needs: a release build (cargo build --release -p pacer-cli) and nginx. On
# the 2-core machine oha (1 worker thread), nginx (1 worker) and the gateway
# share the cores, so the gateway's figure is a lower bound of what it does
# with a core of its own.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONCURRENCIES="${CONCURRENCIES:-64 256}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-15}"
read -r -a SERVE_EXTRA <<<"${SERVE_ARGS:-}"

ensure_oha
start_static
start_serve --upstream "$STATIC_URL/v1" "${SERVE_EXTRA[@]}"
BODY=$(chat_body)
echo "throughput: upstream $STATIC_URL, gateway $SERVE_URL, connections $CONCURRENCIES, ${SECONDS_PER_RUN}s each" >&2

load() { # NAME URL C
  oha_json "$WORK/throughput-$1-$3.json" -z "${SECONDS_PER_RUN}s" -c "$3" --worker-threads 1 \
    -m POST -T application/json -H "authorization: Bearer sk-client-bench" -d "$BODY" \
    "$2/v1/chat/completions"
}

ROWS=()
for C in $CONCURRENCIES; do
  echo "throughput: -c $C direct" >&2
  load direct "$STATIC_URL" "$C"
  echo "throughput: -c $C through pacer serve" >&2
  C0=$(proc_cpu "$SERVE_PID")
  load serve "$SERVE_URL" "$C"
  C1=$(proc_cpu "$SERVE_PID")
  RSS=$(proc_rss_mb "$SERVE_PID")
  ROWS+=("$(python3 - "$C" "$WORK/throughput-direct-$C.json" "$WORK/throughput-serve-$C.json" "$C0" "$C1" "$RSS" <<'PY'
import json, sys
c, direct, serve, c0, c1, rss = sys.argv[1:]
d, s = json.load(open(direct)), json.load(open(serve))
def side(r):
    ok = sum(v for k, v in r["statusCodeDistribution"].items() if k.startswith("2"))
    return {
        "requests_per_s": round(r["summary"]["requestsPerSec"], 1),
        "ok_per_s": round(ok / r["summary"]["total"], 1) if r["summary"]["total"] else None,
        "p50_ms": round(r["latencyPercentiles"]["p50"] * 1000, 3),
        "p99_ms": round(r["latencyPercentiles"]["p99"] * 1000, 3),
        "status": r["statusCodeDistribution"], "errors": r["errorDistribution"],
        "answered_ok": ok,
    }
ds, ss = side(d), side(s)
print(json.dumps({
    "connections": int(c), "direct": ds, "serve": ss,
    "serve_share_of_direct": round(ss["ok_per_s"] / ds["ok_per_s"], 3) if ds["ok_per_s"] else None,
    "serve_cpu_s_per_1000": round((float(c1) - float(c0)) / max(ss["answered_ok"], 1) * 1000, 4),
    "serve_rss_mb": float(rss),
}))
PY
)")
  echo "  ${ROWS[-1]}" >&2
done

MACHINE=$(machine_json)
printf '%s\n' "${ROWS[@]}" >"$WORK/throughput.rows.jsonl"
python3 - "$MACHINE" "$WORK/throughput.rows.jsonl" "$RESULTS/throughput.json" "$SECONDS_PER_RUN" <<'PY'
import json, sys
machine, rows_path, dest, secs = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path) if l.strip()]
json.dump({"benchmark": "serve-throughput", "machine": json.loads(machine),
           "seconds_per_run": int(secs), "load_generator": "oha -z SECONDS -c C (no rate limit)",
           "rows": rows}, open(dest, "w"), indent=2)
for r in rows:
    d, s = r["direct"], r["serve"]
    print(f"throughput -c {r['connections']}: direct {d['ok_per_s']} ok/s (p50 {d['p50_ms']} ms); "
          f"through pacer serve {s['ok_per_s']} ok/s (p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms) = "
          f"{r['serve_share_of_direct']} of direct; errors {s['errors']}; "
          f"gateway {r['serve_cpu_s_per_1000']} CPU s / 1000 req, RSS {r['serve_rss_mb']} MB")
print(f"  -> {dest}")
PY
