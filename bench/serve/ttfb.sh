#!/usr/bin/env bash
# Streaming time-to-first-byte added by `pacer serve`: how much later the
# first bytes of a streamed chat completion reach the client through the
# gateway than straight from the upstream, and whether the stream is passed
# on chunk by chunk (first byte long before the last) rather than gathered.
#
#   bench/serve/ttfb.sh
#   RATE=50 SECONDS_PER_RUN=10 LATENCY_MS=100 CHUNK_DELAY_MS=10 bench/serve/ttfb.sh
#
# How: the upstream is `pacer mock` (nginx cannot stream at a pace), answering
# after LATENCY_MS (50) and then sending one server-sent event every
# CHUNK_DELAY_MS (20): three words an event, MAX_TOKENS (64) tokens, so about
# 20 events and a whole answer of roughly LATENCY_MS + 20 × CHUNK_DELAY_MS. oha (installed once into
# target/bench-tools if missing) sends `"stream": true` chat completions at a
# constant RATE (100) per second for SECONDS_PER_RUN (20) seconds over CONNS
# (64) connections, directly to the mock, then through `pacer serve
# --upstream MOCK/v1` (no limits; SERVE_ARGS adds flags). oha's "first byte"
# is the arrival of the first body frame after the headers (the first event).
# Reported: first-byte p50/p99 both ways and the added p50/p99; the whole
# answer's p50 both ways; and first byte / whole answer through the gateway
# (near 1 would mean the gateway gathers the stream before passing it on).
# Results: bench/serve/results/ttfb.json.
#
# Needs: a release build (cargo build --release -p pacer-cli).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RATE="${RATE:-100}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-20}"
CONNS="${CONNS:-64}"
LATENCY_MS="${LATENCY_MS:-50}"
CHUNK_DELAY_MS="${CHUNK_DELAY_MS:-20}"
export MAX_TOKENS="${MAX_TOKENS:-64}"
read -r -a SERVE_EXTRA <<<"${SERVE_ARGS:-}"

ensure_oha
start_mock --latency "$LATENCY_MS" --chunk-delay "$CHUNK_DELAY_MS"
start_serve --upstream "$MOCK_URL/v1" "${SERVE_EXTRA[@]}"
BODY=$(chat_body true)
echo "ttfb: mock $MOCK_URL (latency ${LATENCY_MS} ms, ${CHUNK_DELAY_MS} ms between chunks), gateway $SERVE_URL, $RATE req/s for ${SECONDS_PER_RUN}s" >&2

load() { # NAME URL
  oha_json "$WORK/ttfb-$1.json" -q "$RATE" -n $((RATE * SECONDS_PER_RUN)) -c "$CONNS" --worker-threads 1 \
    -m POST -T application/json -H "authorization: Bearer sk-mock-key" -d "$BODY" \
    "$2/v1/chat/completions"
}

echo "ttfb: direct" >&2
load direct "$MOCK_URL"
echo "ttfb: through pacer serve" >&2
load serve "$SERVE_URL"

MACHINE=$(machine_json)
python3 - "$MACHINE" "$WORK/ttfb-direct.json" "$WORK/ttfb-serve.json" "$RESULTS/ttfb.json" \
  "$RATE" "$SECONDS_PER_RUN" "$LATENCY_MS" "$CHUNK_DELAY_MS" "$MAX_TOKENS" <<'PY'
import json, sys
machine, direct, serve, dest, rate, secs, lat, delay, tokens = sys.argv[1:]
d, s = json.load(open(direct)), json.load(open(serve))
def ms(v): return round(v * 1000, 3)
def side(r):
    return {
        "first_byte_p50_ms": ms(r["firstBytePercentiles"]["p50"]),
        "first_byte_p99_ms": ms(r["firstBytePercentiles"]["p99"]),
        "whole_p50_ms": ms(r["latencyPercentiles"]["p50"]),
        "whole_p99_ms": ms(r["latencyPercentiles"]["p99"]),
        "status": r["statusCodeDistribution"], "errors": r["errorDistribution"],
    }
ds, ss = side(d), side(s)
res = {
    "benchmark": "serve-ttfb", "machine": json.loads(machine),
    "rate": int(rate), "seconds": int(secs), "upstream_latency_ms": int(lat),
    "upstream_chunk_delay_ms": int(delay), "max_tokens": int(tokens),
    "direct": ds, "serve": ss,
    "added_first_byte_p50_ms": round(ss["first_byte_p50_ms"] - ds["first_byte_p50_ms"], 3),
    "added_first_byte_p99_ms": round(ss["first_byte_p99_ms"] - ds["first_byte_p99_ms"], 3),
    "serve_first_byte_share_of_whole": round(ss["first_byte_p50_ms"] / ss["whole_p50_ms"], 3) if ss["whole_p50_ms"] else None,
}
json.dump(res, open(dest, "w"), indent=2)
print(f"ttfb @ {rate} req/s: direct first byte p50 {ds['first_byte_p50_ms']} ms p99 {ds['first_byte_p99_ms']} ms "
      f"(whole answer p50 {ds['whole_p50_ms']} ms); through pacer serve p50 {ss['first_byte_p50_ms']} ms "
      f"p99 {ss['first_byte_p99_ms']} ms (whole p50 {ss['whole_p50_ms']} ms) => added p50 "
      f"{res['added_first_byte_p50_ms']} ms, p99 {res['added_first_byte_p99_ms']} ms; first byte at "
      f"{res['serve_first_byte_share_of_whole']} of the whole answer; errors {ss['errors']}, status {ss['status']}")
print(f"  -> {dest}")
PY
