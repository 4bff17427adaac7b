# Shared helpers for the `pacer serve` benchmarks. Source it; do not run it.
#
# On top of bench/run/lib.sh (the release binary, `pacer mock` helpers,
# machine_json, cleanup on EXIT) it brings:
#   ensure_oha            the load generator: $OHA, else oha on PATH, else
#                         target/bench-tools/bin/oha, else `cargo install oha`
#                         there (once); sets OHA
#   start_static          bench/run/static_upstream.sh (nginx) in a private dir;
#                         sets STATIC_URL (root, no /v1)
#   start_serve ARGS...   `pacer serve --listen 127.0.0.1:0 ARGS` in the
#                         background; sets SERVE_PID and SERVE_URL (root, no /v1)
#   stop_serve            SIGTERM (graceful), bounded, then SIGKILL
#   oha_json OUT ARGS...  runs oha with JSON output into OUT (bounded)
#   proc_cpu PID          user+sys CPU seconds of a live process
#   proc_rss_mb PID       its resident memory (VmRSS) in MB
# Everything listens on 127.0.0.1 and every wait is bounded.

SERVE_BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESULTS="${RESULTS:-$SERVE_BENCH_DIR/results}"
# shellcheck source=../run/lib.sh
source "$SERVE_BENCH_DIR/../run/lib.sh"

OHA_VERSION="${OHA_VERSION:-1.16.0}"
BENCH_TOOLS="$ROOT/target/bench-tools"
SERVE_PID=""
SERVE_URL=""
STATIC_URL=""
export STATIC_DIR="${STATIC_DIR:-$WORK/static-upstream.$$}"

serve_cleanup() {
  stop_serve
  [[ -n "$STATIC_URL" ]] && "$ROOT/bench/run/static_upstream.sh" stop || true
  cleanup
}
trap serve_cleanup EXIT

ensure_oha() {
  if [[ -n "${OHA:-}" && -x "$OHA" ]]; then return 0; fi
  if command -v oha >/dev/null 2>&1; then OHA=$(command -v oha); return 0; fi
  OHA="$BENCH_TOOLS/bin/oha"
  [[ -x "$OHA" ]] && return 0
  echo "bench: installing oha $OHA_VERSION into $BENCH_TOOLS (once; a few minutes)" >&2
  if ! cargo install oha --locked --version "$OHA_VERSION" --root "$BENCH_TOOLS" \
      >"$WORK/oha-install.log" 2>&1; then
    local hint=""
    command -v cmake >/dev/null 2>&1 || hint=" (cmake is missing: apt-get install cmake, then rerun)"
    echo "bench: could not install oha with cargo install; see $WORK/oha-install.log$hint" >&2
    exit 1
  fi
  [[ -x "$OHA" ]] || { echo "bench: cargo install oha left no $OHA" >&2; exit 1; }
}

start_static() {
  [[ -x "$(command -v nginx || echo /usr/sbin/nginx)" ]] || {
    echo "bench: nginx is needed for the static upstream (apt-get install nginx-light)" >&2
    exit 1
  }
  STATIC_URL=$("$ROOT/bench/run/static_upstream.sh" start)
  _CLEANUP_EXTRA+=("$STATIC_DIR")
}

# start_serve [FLAGS...]: the upstream keys are the mock's (the static
# upstream checks none).
start_serve() {
  stop_serve
  local out="$WORK/serve.$$.out"
  : >"$out"
  OPENAI_API_KEY=sk-mock-key ANTHROPIC_API_KEY=sk-mock-key PACER_LOG="${PACER_LOG:-warn}" \
    "$PACER" serve --listen 127.0.0.1:0 "$@" >"$out" 2>"$WORK/serve.$$.err" &
  SERVE_PID=$!
  local i line=""
  for i in $(seq 200); do
    line=$(head -n1 "$out" 2>/dev/null || true)
    [[ "$line" == listening\ on\ http://* ]] && break
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [[ "$line" != listening\ on\ http://127.0.0.1:* ]]; then
    echo "bench: pacer serve did not start: $(cat "$WORK/serve.$$.err")" >&2
    exit 1
  fi
  SERVE_URL="${line#listening on }"
}

stop_serve() {
  [[ -n "$SERVE_PID" ]] || return 0
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    local i
    for i in $(seq 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVE_PID" 2>/dev/null || true
  fi
  wait "$SERVE_PID" 2>/dev/null || true
  SERVE_PID=""
}

# oha_json OUT [OHA ARGS...]: JSON report into OUT; bounded by OHA_LIMIT (s).
oha_json() {
  local out=$1; shift
  timeout "${OHA_LIMIT:-600}" "$OHA" --no-tui --output-format json -o "$out" "$@" \
    >"$out.log" 2>&1 || {
    echo "bench: oha failed or timed out: $(tail -5 "$out.log")" >&2
    return 1
  }
}

proc_cpu() {
  python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$1"
}

proc_rss_mb() {
  awk '/^VmRSS:/{printf "%.1f\n", $2/1024}' "/proc/$1/status"
}

# A small chat completion body (PROMPT_CHARS characters of prompt).
chat_body() {
  python3 - "${PROMPT_CHARS:-200}" "${1:-false}" <<'PY'
import json, sys
n, stream = int(sys.argv[1]), sys.argv[2] == "true"
text = ("Clean up the OCR text of this invoice line. " * (n // 44 + 1))[:n]
body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": int(__import__("os").environ.get("MAX_TOKENS", "16"))}
if stream:
    body["stream"] = True
print(json.dumps(body))
PY
}
