#!/usr/bin/env python3
"""Time, one by one, the start-up work a resumed `pacer run` does on its
state, with Python's sqlite3 and hashlib (standard library), to see where the
time to the first request goes. Writes nothing: the updates run inside a
transaction that is rolled back.

  resume_breakdown.py STATE INPUT

The statements are copied from crates/pacer/src/store/job_store.rs (recover,
counts, models, fetch_pending); keep them in step if those change. The input
is hashed with sha256 as a stand-in (pacer uses blake3, which is faster), so
the hashing figure is an upper bound; reading the file is what it shows.
"""
import hashlib
import json
import sqlite3
import sys
import time


def timed(label, fn, rows):
    t = time.perf_counter()
    r = fn()
    rows.append((label, round(time.perf_counter() - t, 4), r))


def main():
    state, inp = sys.argv[1], sys.argv[2]
    rows = []

    def read_input():
        h = hashlib.sha256()
        n = 0
        with open(inp, "rb") as f:
            while True:  # bounded by the file's size
                b = f.read(1 << 20)
                if not b:
                    return n
                h.update(b)
                n += len(b)

    timed("read + hash the input (sha256; pacer: blake3)", read_input, rows)
    con = sqlite3.connect(state, isolation_level=None)
    con.execute("PRAGMA cache_size = -16384")
    one = lambda q, *a: (lambda: con.execute(q, a).fetchall())
    timed("open: PRAGMA journal_mode=WAL; user_version", one("PRAGMA journal_mode = WAL"), rows)
    con.execute("BEGIN IMMEDIATE")
    timed("recover: SELECT line FROM output_queue",
          lambda: len(con.execute("SELECT line FROM output_queue ORDER BY idx").fetchall()), rows)
    timed("recover: DELETE FROM output_queue",
          lambda: con.execute("DELETE FROM output_queue").rowcount, rows)
    timed("recover: UPDATE state=0 WHERE state=1 (requeue in-flight)",
          lambda: con.execute("UPDATE requests SET state = 0 WHERE state = 1").rowcount, rows)
    con.execute("ROLLBACK")
    timed("counts: GROUP BY state with SUMs",
          one("SELECT state, COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(prompt_tokens), 0), "
              "COALESCE(SUM(completion_tokens), 0) FROM requests GROUP BY state"), rows)
    timed("models: SELECT DISTINCT model WHERE state < 2", one("SELECT DISTINCT model FROM requests WHERE state < 2"), rows)
    timed("fetch_pending: first page of 512",
          lambda: len(con.execute("SELECT idx, custom_id, priority, attempts, url, body, model, est_prompt, est_output "
                                  "FROM requests WHERE state = 0 ORDER BY priority DESC, idx LIMIT 512").fetchall()), rows)
    plans = {q: [r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + q)] for q in [
        "UPDATE requests SET state = 0 WHERE state = 1",
        "SELECT DISTINCT model FROM requests WHERE state < 2",
        "SELECT state, COUNT(*) FROM requests GROUP BY state",
    ]}
    print(json.dumps({"steps": [{"step": l, "s": s, "result": r if isinstance(r, int) else None} for l, s, r in rows],
                      "query_plans": plans}, indent=2))


if __name__ == "__main__":
    main()
