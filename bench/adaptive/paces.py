#!/usr/bin/env python3
"""Summarise `pacer run --progress plain` stderr: the pace in force over time.

  paces.py STDERR_FILE   -> JSON list of {"line": i, "pace": "..."} where the pace changed

Plain progress lines come every 10 s; the pace is the `pace: ...` field.
"""
import json
import re
import sys

PACE = re.compile(r"pace: ([^|]*)")

out, last = [], None
with open(sys.argv[1], errors="replace") as f:
    i = 0
    for line in f:
        m = PACE.search(line)
        if not m:
            continue
        p = m.group(1).strip()
        if p != last:
            out.append({"line": i, "approx_s": i * 10, "pace": p})
            last = p
        i += 1
print(json.dumps({"progress_lines": i, "changes": out[:200]}))
