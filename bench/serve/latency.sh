#!/usr/bin/env bash
# Added latency of `pacer serve`: p50 and p99 of a chat completion sent
# through the gateway, against the same requests sent to the upstream
# directly, at a constant 1,000 and 2,000 requests/s.
#
#   bench/serve/latency.sh
#   RATES="1000" SECONDS_PER_RUN=10 bench/serve/latency.sh
#
# How: the upstream is nginx answering one fixed chat completion
# (bench/run/static_upstream.sh), so it costs next to nothing and what is
# added is the gateway. The load generator is oha (installed once into
# target/bench-tools if missing) at a constant rate (-q RATE) with
# --latency-correction, so a stall counts against the requests that should
# have been sent during it (no coordinated omission), over CONNS (64)
# keep-alive connections, for SECONDS_PER_RUN (20) seconds per rate: first
# directly against nginx, then through `pacer serve --upstream NGINX/v1` with
# no limits configured (SERVE_ARGS adds flags). Reported per rate: the
# direct and gateway p50/p99/p99.9 (ms), the added p50/p99 (gateway minus
# direct), the rate achieved, non-2xx answers, and the gateway's CPU seconds
# per 1,000 requests and RSS. Results: bench/serve/results/latency.json.
#
# Needs: a release build (cargo build --release -p pacer-cli), nginx
# (apt-get install nginx-light). On the 2-core machine, oha (1 worker thread),
# nginx (1 worker) and the gateway share the cores: the numbers include that.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RATES="${RATES:-1000 2000}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-20}"
CONNS="${CONNS:-64}"
read -r -a SERVE_EXTRA <<<"${SERVE_ARGS:-}"

ensure_oha
start_static
start_serve --upstream "$STATIC_URL/v1" "${SERVE_EXTRA[@]}"
BODY=$(chat_body)
echo "latency: upstream $STATIC_URL, gateway $SERVE_URL, rates $RATES, ${SECONDS_PER_RUN}s each" >&2

load() { # NAME URL RATE
  local name=$1 url=$2 rate=$3
  oha_json "$WORK/latency-$name-$rate.json" -q "$rate" --latency-correction \
    -n $((rate * SECONDS_PER_RUN)) -c "$CONNS" --worker-threads 1 \
    -m POST -T application/json -H "authorization: Bearer sk-client-bench" -d "$BODY" \
    "$url/v1/chat/completions"
}

ROWS=()
for RATE in $RATES; do
  echo "latency: $RATE req/s direct" >&2
  load direct "$STATIC_URL" "$RATE"
  echo "latency: $RATE req/s through pacer serve" >&2
  C0=$(proc_cpu "$SERVE_PID")
  load serve "$SERVE_URL" "$RATE"
  C1=$(proc_cpu "$SERVE_PID")
  RSS=$(proc_rss_mb "$SERVE_PID")
  ROWS+=("$(python3 - "$RATE" "$WORK/latency-direct-$RATE.json" "$WORK/latency-serve-$RATE.json" "$C0" "$C1" "$RSS" <<'PY'
import json, sys
rate, direct, serve, c0, c1, rss = sys.argv[1:]
d, s = json.load(open(direct)), json.load(open(serve))
def ms(r, p): return round(r["latencyPercentiles"][p] * 1000, 3)
def side(r):
    n = sum(r["statusCodeDistribution"].values())
    return {
        "p50_ms": ms(r, "p50"), "p99_ms": ms(r, "p99"), "p99.9_ms": ms(r, "p99.9"),
        "requests_per_s": round(r["summary"]["requestsPerSec"], 1),
        "status": r["statusCodeDistribution"], "errors": r["errorDistribution"],
        "non_2xx": sum(v for k, v in r["statusCodeDistribution"].items() if not k.startswith("2")),
        "answered": n,
    }
ds, ss = side(d), side(s)
n = max(ss["answered"], 1)
print(json.dumps({
    "rate": int(rate), "direct": ds, "serve": ss,
    "added_p50_ms": round(ss["p50_ms"] - ds["p50_ms"], 3),
    "added_p99_ms": round(ss["p99_ms"] - ds["p99_ms"], 3),
    "serve_cpu_s_per_1000": round((float(c1) - float(c0)) / n * 1000, 4),
    "serve_rss_mb": float(rss),
}))
PY
)")
  echo "  ${ROWS[-1]}" >&2
done

MACHINE=$(machine_json)
printf '%s\n' "${ROWS[@]}" >"$WORK/latency.rows.jsonl"
python3 - "$MACHINE" "$WORK/latency.rows.jsonl" "$RESULTS/latency.json" "$SECONDS_PER_RUN" "$CONNS" <<'PY'
import json, sys
machine, rows_path, dest, secs, conns = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path) if l.strip()]
json.dump({"benchmark": "serve-latency", "machine": json.loads(machine),
           "seconds_per_run": int(secs), "connections": int(conns), "load_generator": "oha -q RATE --latency-correction",
           "rows": rows}, open(dest, "w"), indent=2)
for r in rows:
    d, s = r["direct"], r["serve"]
    print(f"latency @ {r['rate']} req/s: direct p50 {d['p50_ms']} ms p99 {d['p99_ms']} ms; "
          f"through pacer serve p50 {s['p50_ms']} ms p99 {s['p99_ms']} ms "
          f"=> added p50 {r['added_p50_ms']} ms, p99 {r['added_p99_ms']} ms; "
          f"achieved {s['requests_per_s']} req/s, {s['non_2xx']} non-2xx, {sum(s['errors'].values())} errors; "
          f"gateway {r['serve_cpu_s_per_1000']} CPU s / 1000 req, RSS {r['serve_rss_mb']} MB")
print(f"  -> {dest}")
PY
