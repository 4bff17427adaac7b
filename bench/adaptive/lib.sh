# Shared helpers for the adaptive-pacing and money benchmarks (issues 4 and 5).
# Source it; do not run it. bash + python3 standard library only, loopback only.
#
# Each script starts its own `pacer mock` on a free port (port 0), kills every
# process it started on EXIT, bounds every wait, and writes JSON results under
# its folder's results/.

set -euo pipefail

AM_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../common.sh
source "$AM_LIB_DIR/../common.sh"
# Scratch space for inputs, outputs, logs and state files.
WORK="${BENCH_WORK:-/tmp/pacer-bench-am}"
mkdir -p "$WORK"

_PIDS=()

am_cleanup() {
  local p
  for p in "${_PIDS[@]}"; do _kill_bounded "$p"; done
  return 0
}
trap am_cleanup EXIT
trap 'exit 130' INT TERM

# track PID: kill it on EXIT.
track() { _PIDS+=("$1"); }

# start_mock NAME [MOCK FLAGS...]: starts a mock; sets MOCK_PID and MOCK_URL
# (the root, no /v1). NAME keeps parallel mocks' files apart.
start_mock() {
  local name=$1; shift
  local out="$WORK/$name.mock.out"
  rm -f "$out"
  "$PACER" mock --listen 127.0.0.1:0 "$@" >"$out" 2>"$WORK/$name.mock.err" &
  MOCK_PID=$!
  track "$MOCK_PID"
  local i line=""
  for i in $(seq 100); do
    line=$(head -n1 "$out" 2>/dev/null || true)
    [[ "$line" == listening\ on\ http://* ]] && break
    sleep 0.05
  done
  if [[ "$line" != listening\ on\ http://127.0.0.1:* ]]; then
    echo "bench: the mock did not start: $(cat "$WORK/$name.mock.err")" >&2
    exit 1
  fi
  MOCK_URL="${line#listening on }"
}

# fresh OUT: remove an output and its state file so a run starts from scratch.
fresh() { rm -f -- "$1" "${1%.jsonl}.pacer.db" "${1%.jsonl}.pacer.db-wal" "${1%.jsonl}.pacer.db-shm"; }

# machine_json: the machine and the build, as one JSON object.
machine_json() {
  python3 - "$ROOT" "$PACER" <<'PY'
import datetime, hashlib, json, os, subprocess, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception: return ""
print(json.dumps({
  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
  "nproc": int(sh("nproc") or 0),
  "cpu": sh("lscpu | grep 'Model name' | sed 's/Model name: *//'"),
  "load_1m": round(os.getloadavg()[0], 2),
  "git": sh(f"git -C {sys.argv[1]} rev-parse --short HEAD") + ("+dirty" if sh(f"git -C {sys.argv[1]} status --porcelain -- crates") else ""),
  "pacer_binary_sha256": hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest()[:16],
}))
PY
}
