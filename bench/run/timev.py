#!/usr/bin/env python3
"""Turn a `/usr/bin/time -v -o FILE` report into JSON: user_s, sys_s, cpu_s,
elapsed_s, max_rss_mb."""
import json
import sys


def parse(path):
    out = {}
    for line in open(path):
        k, _, v = line.strip().rpartition(": ")
        if k == "User time (seconds)":
            out["user_s"] = float(v)
        elif k == "System time (seconds)":
            out["sys_s"] = float(v)
        elif k == "Maximum resident set size (kbytes)":
            out["max_rss_mb"] = round(int(v) / 1024, 1)
        elif k.startswith("Elapsed (wall clock) time"):
            parts = [float(p) for p in v.split(":")]
            s = 0.0
            for p in parts:
                s = s * 60 + p
            out["elapsed_s"] = s
        elif k == "Exit status":
            out["exit_status"] = int(v)
    if "user_s" in out and "sys_s" in out:
        out["cpu_s"] = round(out["user_s"] + out["sys_s"], 2)
    return out


if __name__ == "__main__":
    print(json.dumps(parse(sys.argv[1])))
