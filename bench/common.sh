# What every benchmark library shares: the binary, the mock's key, the check
# that pacer is built, and a bounded way to stop a process. Sourced by
# bench/run/lib.sh and bench/adaptive/lib.sh; not run on its own.

BENCH_ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_ROOT_DIR/.." && pwd)"
PACER="${PACER:-$ROOT/target/release/pacer}"
export OPENAI_API_KEY=sk-mock-key
unset OPENAI_BASE_URL

if [[ ! -x "$PACER" ]]; then
  echo "bench: $PACER not found; build it first: cargo build --release -p pacer-cli" >&2
  exit 1
fi

_kill_bounded() { # PID: SIGINT, wait up to 5 s, then SIGKILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
