#!/usr/bin/env bash
# Report benchmark (issue 12): `pacer report` on a state with a 1,000,000-
# request history, and what that history costs the state.
#
#   bench/report/build.sh            # N=1000000 requests, 2 hours of history
#   N=100000 bench/report/build.sh
#
# The state is made with the sqlite3 CLI from pacer's own migrations
# (crates/pacer/src/store/migrations/*.sql), so its schema is the one a run
# writes: N requests, all done (bodies of ~320 bytes, as a real job's are
# read past by the summary's queries); N successful attempts spread over two hours
# (latencies 200-1,100 ms, 1% slow ones at +4 s), 3% extra 429 attempts and
# 1% extra 500s, the pace once every 10 s, one run with a budget. Then
# `pacer report` (release build) runs RUNS times (default 3) and the median
# time, the page's size and the history tables' bytes (SQLite's dbstat) are
# recorded in bench/report/results/report.json.
# Targets: <= 10 s and <= 2 MB for 1,000,000 requests.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../common.sh
source "$BENCH_DIR/../common.sh"
N="${N:-1000000}"
RUNS="${RUNS:-3}"
WORK="${BENCH_WORK:-/tmp/pacer-bench}/report"
RESULTS="$BENCH_DIR/results"
mkdir -p "$WORK" "$RESULTS"
command -v sqlite3 >/dev/null || { echo "bench: the sqlite3 CLI is needed (apt-get install sqlite3)" >&2; exit 1; }

STATE="$WORK/history-$N.pacer.db"
PAGE="$WORK/history-$N.report.html"
rm -f "$STATE" "$STATE-wal" "$STATE-shm" "$PAGE"
MIGRATIONS=("$ROOT"/crates/pacer/src/store/migrations/*.sql)

echo "report: making a state with $N requests of history ($STATE)" >&2
t0=$(date +%s.%N)
{
  echo "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;"
  cat "${MIGRATIONS[@]}"
  echo "PRAGMA user_version = ${#MIGRATIONS[@]};"
  cat <<SQL
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < $N - 1)
INSERT INTO requests (idx, custom_id, state, attempts, url, body, model, est_prompt, est_output,
                      prompt_tokens, completion_tokens, cost_usd, cached_tokens)
SELECT i, printf('r%07d', i), 2, 1, '/v1/chat/completions',
       printf('{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Summarise document %d: %s"}],"max_tokens":300}', i, hex(randomblob(100))),
       'gpt-4o-mini', 150, 300,
       140, 240, 0.000165, 0 FROM c;
-- Two hours: request i goes out at i * span / N ms.
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < $N - 1)
INSERT INTO attempts (idx, sent, wait_ms, latency_ms, status, outcome, est_tokens, tokens, cost_micro)
SELECT i, i * 7200000 / $N, (i * 7919) % 40,
       200 + (i * 2654435761) % 900 + CASE WHEN i % 100 = 0 THEN 4000 ELSE 0 END,
       200, 0, 450, 380, 165 FROM c
UNION ALL SELECT i, i * 7200000 / $N - 700, 0, 40 + i % 30, 429, 1, 450, NULL, NULL FROM c WHERE i % 33 = 0
UNION ALL SELECT i, i * 7200000 / $N - 900, 2, 300 + i % 200, 500, 1, 450, NULL, NULL FROM c WHERE i % 97 = 0;
WITH RECURSIVE t(s) AS (SELECT 0 UNION ALL SELECT s + 10 FROM t WHERE s < 7190)
INSERT INTO pace (at, rpm, tpm, concurrency, source)
SELECT s * 1000, 8000 + (s % 600) * 2, 4000000, 120, 2 FROM t;
INSERT INTO runs (started, ended, via, max_cost, rpm, tpm, concurrency, stop)
VALUES (0, 7201000, 'live', 200.0, NULL, 4000000, NULL, NULL);
INSERT INTO attempt_errors (kind, n, example) VALUES
  ('HTTP 429', $N / 33 + 1, 'HTTP 429: {"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}'),
  ('HTTP 500', $N / 97 + 1, 'HTTP 500: {"error":{"message":"The server had an error while processing your request.","type":"server_error"}}');
INSERT INTO meta (key, value) VALUES ('imported', '1'), ('output_len', '0'), ('resent', '0'),
  ('fingerprint', 'bench'), ('input_len', '0'), ('history_epoch_ms', '1764547200000');
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
} | sqlite3 "$STATE" >/dev/null
t1=$(date +%s.%N)
echo "report: state made in $(python3 -c "print(round($t1 - $t0, 1))") s: $(du -h "$STATE" | cut -f1)" >&2

TABLES=$(sqlite3 "$STATE" "SELECT json_group_object(name, bytes) FROM (SELECT name, SUM(pgsize) AS bytes FROM dbstat WHERE name IN ('attempts', 'pace', 'runs', 'attempt_errors', 'requests') GROUP BY name);")
ROWS=$(sqlite3 "$STATE" "SELECT COUNT(*) FROM attempts;")

TIMES=()
for i in $(seq "$RUNS"); do
  s=$(date +%s.%N)
  "$PACER" report "$STATE" -o "$PAGE" 2>"$WORK/report.stderr"
  e=$(date +%s.%N)
  TIMES+=("$(python3 -c "print(round($e - $s, 3))")")
  echo "report: run $i: ${TIMES[-1]} s" >&2
done
SIZE=$(stat -c %s "$PAGE")
python3 - "$N" "$ROWS" "$SIZE" "$TABLES" "$(IFS=,; echo "${TIMES[*]}")" "$ROOT" "$PACER" "$RESULTS/report.json" <<'PY'
import json, os, subprocess, sys, datetime, statistics, hashlib
n, rows, size, tables, times, root, pacer, dest = sys.argv[1:9]
times = [float(t) for t in times.split(",")]
tables = json.loads(tables)
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
history = sum(v for k, v in tables.items() if k != "requests")
res = {
  "benchmark": "report", "requests": int(n), "attempts": int(rows),
  "report_seconds": times, "report_seconds_median": statistics.median(times),
  "page_bytes": int(size), "table_bytes": tables, "history_bytes": history,
  "history_bytes_per_attempt": round(history / int(rows), 1),
  "machine": {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "nproc": int(sh("nproc") or 0), "cpu": sh("lscpu | grep 'Model name' | sed 's/Model name: *//'"),
    "load_1m": os.getloadavg()[0], "git": sh(f"git -C {root} rev-parse --short HEAD"),
    "pacer_sha256": hashlib.sha256(open(pacer, "rb").read()).hexdigest()[:16],
  },
  "targets": {"report_seconds": 10, "page_bytes": 2 * 1024 * 1024},
}
res["met"] = res["report_seconds_median"] <= 10 and res["page_bytes"] <= 2 * 1024 * 1024
json.dump(res, open(dest, "w"), indent=1)
print(json.dumps({k: res[k] for k in ("requests", "attempts", "report_seconds_median", "page_bytes", "history_bytes", "history_bytes_per_attempt", "met")}))
PY
