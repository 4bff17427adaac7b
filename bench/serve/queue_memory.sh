#!/usr/bin/env bash
# Memory of `pacer serve` holding 10,000 queued requests: the gateway's
# resident memory (RSS) idle, then with QUEUED (10,000) chat completions
# waiting in its queue, and the cost per queued request.
#
#   bench/serve/queue_memory.sh
#   QUEUED=2000 PROMPT_CHARS=4000 bench/serve/queue_memory.sh
#
# How: the upstream is nginx (bench/run/static_upstream.sh); the gateway runs
# with `--rpm 1` (one request a minute leaves the queue: in practice none
# during the measurement), `--max-queue` above QUEUED and `--max-wait 1000h`
# (so no request is refused for the wait its place implies). oha (installed
# once into target/bench-tools if missing) opens QUEUED connections at once
# (-c QUEUED -n QUEUED), each sending one chat completion with a
# PROMPT_CHARS (1000) character prompt, and is stopped after the measurement.
# The script polls the gateway's /metrics until pacer_queue_depth reaches
# QUEUED - 2 (at most FILL_SECONDS, 120), waits SETTLE_SECONDS (3), then
# reads VmRSS and VmHWM from /proc. Reported: RSS idle, RSS and peak with the
# queue full, queue depth reached, and (RSS full - RSS idle) / queued in KB,
# which includes each waiting client's connection and request body.
# Results: bench/serve/results/queue_memory.json.
#
# Needs: a release build (cargo build --release -p pacer-cli), nginx, and
# room for 2 × QUEUED open files (the script raises `ulimit -n`).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUEUED="${QUEUED:-10000}"
PROMPT_CHARS="${PROMPT_CHARS:-1000}"
FILL_SECONDS="${FILL_SECONDS:-120}"
SETTLE_SECONDS="${SETTLE_SECONDS:-3}"
export PROMPT_CHARS
read -r -a SERVE_EXTRA <<<"${SERVE_ARGS:-}"

ulimit -n $((QUEUED * 2 + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < QUEUED + 100 )); then
  echo "bench: only $(ulimit -n) open files allowed; $QUEUED queued requests need more" >&2
  exit 1
fi

ensure_oha
start_static
start_serve --upstream "$STATIC_URL/v1" --rpm 1 --max-queue $((QUEUED * 2)) --max-wait 1000h "${SERVE_EXTRA[@]}"
BODY=$(chat_body)

queue_depth() {
  curl -fsS --max-time 5 "$SERVE_URL/metrics" 2>/dev/null \
    | awk '!/^#/ && ($1 == "pacer_queue_depth" || index($1, "pacer_queue_depth{") == 1) {s += $NF} END {print s + 0}'
}

sleep 1
RSS_IDLE=$(proc_rss_mb "$SERVE_PID")
echo "queue_memory: gateway $SERVE_URL idle at $RSS_IDLE MB; queueing $QUEUED requests (${PROMPT_CHARS}-char prompts)" >&2

OHA_LIMIT=$((FILL_SECONDS + 60))
timeout "$OHA_LIMIT" "$OHA" --no-tui -n "$QUEUED" -c "$QUEUED" --worker-threads 1 \
  -m POST -T application/json -H "authorization: Bearer sk-client-bench" -d "$BODY" \
  "$SERVE_URL/v1/chat/completions" >"$WORK/queue_memory.oha.log" 2>&1 &
OHA_PID=$!
trap 'pkill -KILL -P "$OHA_PID" 2>/dev/null; kill -KILL "$OHA_PID" 2>/dev/null || true; serve_cleanup' EXIT

START=$(date +%s.%N)
DEPTH=0
TIMELINE=()
while :; do
  DEPTH=$(queue_depth)
  NOW=$(python3 -c "print(round($(date +%s.%N) - $START, 2))")
  TIMELINE+=("[$NOW, $DEPTH, $(proc_rss_mb "$SERVE_PID")]")
  (( DEPTH >= QUEUED - 2 )) && break
  if python3 -c "import sys; sys.exit(0 if $NOW > $FILL_SECONDS else 1)"; then
    echo "queue_memory: the queue reached only $DEPTH of $QUEUED in ${FILL_SECONDS}s" >&2
    break
  fi
  kill -0 "$OHA_PID" 2>/dev/null || { echo "queue_memory: oha ended early: $(tail -5 "$WORK/queue_memory.oha.log")" >&2; break; }
  sleep 0.5
done
FILL_S=$(python3 -c "print(round($(date +%s.%N) - $START, 2))")
sleep "$SETTLE_SECONDS"
DEPTH=$(queue_depth)
RSS_FULL=$(proc_rss_mb "$SERVE_PID")
HWM=$(awk '/^VmHWM:/{printf "%.1f\n", $2/1024}' "/proc/$SERVE_PID/status")
CPU=$(proc_cpu "$SERVE_PID")
# OHA_PID is `timeout`'s: kill oha itself first (SIGKILL to timeout would
# leave it running, its connections open).
pkill -KILL -P "$OHA_PID" 2>/dev/null || true
kill -KILL "$OHA_PID" 2>/dev/null || true
wait "$OHA_PID" 2>/dev/null || true
# Once the clients are gone, does the memory come back?
sleep 3
RSS_AFTER=$(proc_rss_mb "$SERVE_PID")
DEPTH_AFTER=$(queue_depth)

MACHINE=$(machine_json)
TL="[$(IFS=,; echo "${TIMELINE[*]}")]"
python3 - "$MACHINE" "$RESULTS/queue_memory.json" "$QUEUED" "$PROMPT_CHARS" "$RSS_IDLE" "$RSS_FULL" "$HWM" \
  "$DEPTH" "$FILL_S" "$CPU" "$RSS_AFTER" "$DEPTH_AFTER" "$TL" <<'PY'
import json, sys
machine, dest, queued, chars, idle, full, hwm, depth, fill_s, cpu, after, depth_after, tl = sys.argv[1:]
queued, depth = int(queued), int(float(depth))
idle, full, hwm, after = float(idle), float(full), float(hwm), float(after)
res = {
    "benchmark": "serve-queue-memory", "machine": json.loads(machine),
    "queued_target": queued, "prompt_chars": int(chars),
    "queue_depth_reached": depth, "fill_s": float(fill_s),
    "rss_idle_mb": idle, "rss_full_mb": full, "peak_rss_mb": hwm,
    "kb_per_queued_request": round((full - idle) * 1024 / depth, 2) if depth else None,
    "rss_after_clients_left_mb": after, "queue_depth_after_clients_left": int(float(depth_after)),
    "serve_cpu_s_total": float(cpu),
    "timeline_s_depth_rssmb": json.loads(tl),
}
json.dump(res, open(dest, "w"), indent=2)
print(f"queue_memory: {depth} queued (target {queued}, {chars}-char prompts) after {fill_s} s: "
      f"RSS {idle} MB idle -> {full} MB full (peak {hwm} MB) = {res['kb_per_queued_request']} KB per queued request; "
      f"after the clients left: queue {res['queue_depth_after_clients_left']}, RSS {after} MB")
print(f"  -> {dest}")
PY
