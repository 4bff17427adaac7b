# Shared helpers for the `pacer run` benchmarks. Source it; do not run it.
#
# Every script: starts its own `pacer mock` on a free loopback port, kills it
# (and any pacer it started) on EXIT, keeps every wait bounded, and writes a
# JSON record under bench/run/results/.

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../common.sh
source "$BENCH_DIR/../common.sh"
RESULTS="${RESULTS:-$BENCH_DIR/results}"
# Scratch space for inputs, outputs and state files (large: ~1 GB for the 1M runs).
WORK="${BENCH_WORK:-/tmp/pacer-bench}"
mkdir -p "$RESULTS" "$WORK"

MOCK_PID=""
MOCK_URL=""
PACER_PID=""
_CLEANUP_EXTRA=()

cleanup() {
  [[ -n "$PACER_PID" ]] && _kill_bounded "$PACER_PID"
  [[ -n "$MOCK_PID" ]] && _kill_bounded "$MOCK_PID"
  local f; for f in "${_CLEANUP_EXTRA[@]}"; do rm -rf -- "$f"; done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_mock [MOCK FLAGS...]: sets MOCK_PID and MOCK_URL (root, no /v1).
start_mock() {
  stop_mock
  local out="$WORK/mock.$$.out"
  "$PACER" mock --listen 127.0.0.1:0 "$@" >"$out" 2>"$WORK/mock.$$.err" &
  MOCK_PID=$!
  local i line=""
  for i in $(seq 100); do
    line=$(head -n1 "$out" 2>/dev/null || true)
    [[ "$line" == listening\ on\ http://* ]] && break
    sleep 0.05
  done
  if [[ "$line" != listening\ on\ http://127.0.0.1:* ]]; then
    echo "bench: the mock did not start: $(cat "$WORK/mock.$$.err")" >&2
    exit 1
  fi
  MOCK_URL="${line#listening on }"
}

stop_mock() {
  if [[ -n "$MOCK_PID" ]]; then _kill_bounded "$MOCK_PID"; wait "$MOCK_PID" 2>/dev/null || true; MOCK_PID=""; fi
}

mock_stats() { python3 "$BENCH_DIR/mockctl.py" stats "$MOCK_URL"; }

# machine_json: the machine and the build, as one JSON object.
machine_json() {
  python3 - "$ROOT" "$PACER" <<'PY'
import json, os, subprocess, sys, datetime, hashlib
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception: return ""
print(json.dumps({
  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
  "nproc": int(sh("nproc") or 0),
  "cpu": sh("lscpu | grep 'Model name' | sed 's/Model name: *//'"),
  "mem_total": sh("free -h | awk '/^Mem:/{print $2}'"),
  "kernel": sh("uname -r"),
  "git": sh(f"git -C {sys.argv[1]} rev-parse --short HEAD") + ("+dirty" if sh(f"git -C {sys.argv[1]} status --porcelain -- crates") else ""),
  "load_1m": os.getloadavg()[0],
  "pacer_binary": {"path": sys.argv[2],
                   "built": datetime.datetime.fromtimestamp(os.path.getmtime(sys.argv[2]), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "sha256": hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest()[:16]},
}))
PY
}

# gen INPUT N MODE [extra generator flags]: generate once, reuse while the flags match.
gen() {
  local path=$1 n=$2 mode=$3; shift 3
  local tag="$n $mode $*"
  if [[ -f "$path" && -f "$path.tag" && "$(cat "$path.tag")" == "$tag" ]]; then return 0; fi
  python3 "$BENCH_DIR/gen_input.py" "$n" "$path" --mode "$mode" "$@"
  echo "$tag" >"$path.tag"
}

# fresh OUT: remove an output and its state so a run starts from scratch.
fresh() { rm -f -- "$1" "${1%.jsonl}.pacer.db" "${1%.jsonl}.pacer.db-wal" "${1%.jsonl}.pacer.db-shm"; }
