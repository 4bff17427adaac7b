#!/usr/bin/env python3
"""Run one command (a `pacer run`) and watch it: resident memory over time,
CPU, and, against a `pacer mock`, when the mock sees its first request.

  runprobe.py [options] -- COMMAND...

  --json PATH             write the record here (default: stdout)
  --stderr PATH           the command's stderr (default: /dev/null)
  --stdout PATH           the command's stdout (default: /dev/null)
  --mock URL              the mock's root URL (http://127.0.0.1:PORT)
  --first-post            with --mock: time from start until the mock has seen
                          a chat completion beyond the ones it had (its log)
  --kill-after-posts K    with --mock: SIGKILL once the mock has seen K new requests
  --deadline S            SIGINT after S seconds (then SIGKILL 15 s later)
  --sample-ms MS          memory sampling interval (default 200)

Every loop is bounded by --deadline (default 1800 s). Standard library only;
Linux (/proc) only.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def rss_kb(pid):
    """(VmRSS, VmHWM) in kB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            d = dict(l.split(":", 1) for l in f if ":" in l)
        return int(d["VmRSS"].split()[0]), int(d["VmHWM"].split()[0])
    except (FileNotFoundError, ProcessLookupError, KeyError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--stderr", default=os.devnull)
    ap.add_argument("--stdout", default=os.devnull)
    ap.add_argument("--mock")
    ap.add_argument("--first-post", action="store_true")
    ap.add_argument("--kill-after-posts", type=int)
    ap.add_argument("--deadline", type=float, default=1800)
    ap.add_argument("--sample-ms", type=float, default=200)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if a.mock and not a.mock.startswith("http://127.0.0.1:"):
        sys.exit("runprobe: loopback mocks only")

    base = get(a.mock + "/mock/stats")["requests"] if a.mock else 0
    rec = {"command": cmd, "mock_requests_before": base}
    timeline = []  # (t, rss_mb)
    first_post = None
    killed = None
    next_sample = 0.0
    out, err = open(a.stdout, "wb"), open(a.stderr, "wb")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=out, stderr=err)
    peak_hwm = 0
    interrupted_at = None
    while True:  # bounded by the deadline below
        now = time.monotonic() - t0
        res = os.wait4(p.pid, os.WNOHANG)
        if res[0] == p.pid:
            status, ru = res[1], res[2]
            break
        if now >= next_sample:
            m = rss_kb(p.pid)
            if m:
                timeline.append((round(now, 3), round(m[0] / 1024, 1)))
                peak_hwm = max(peak_hwm, m[1])
            next_sample = now + a.sample_ms / 1000
        watching_first = a.mock and a.first_post and first_post is None
        if a.mock and (watching_first or a.kill_after_posts):
            st = get(a.mock + "/mock/stats")
            seen = st["requests"] - base
            if watching_first and seen > 0:
                # The first new entry may be the key check (GET /v1/models):
                # look for the first chat completion in the log.
                log = get(f"{a.mock}/mock/log?since={base}&limit=4")
                posts = [e for e in log if e["path"] != "/v1/models"]
                rec.setdefault("first_request_any_s", round(now, 4))
                if posts:
                    first_post = now
                    rec["first_post_s"] = round(now, 4)
            if a.kill_after_posts and seen >= a.kill_after_posts and killed is None:
                os.kill(p.pid, signal.SIGKILL)
                killed = now
                rec["sigkill_at_s"] = round(now, 3)
                rec["mock_requests_at_kill"] = seen
            time.sleep(0.002 if watching_first else 0.02)
        else:
            time.sleep(0.01)
        if interrupted_at is None and now >= a.deadline:
            os.kill(p.pid, signal.SIGINT)
            interrupted_at = now
            rec["sigint_at_s"] = round(now, 3)
        elif interrupted_at is not None and now >= interrupted_at + 15 and killed is None:
            os.kill(p.pid, signal.SIGKILL)
            killed = now
            rec["sigkill_at_s"] = round(now, 3)
    rec["elapsed_s"] = round(time.monotonic() - t0, 3)
    rec["exit_code"] = os.waitstatus_to_exitcode(status)
    rec["user_s"], rec["sys_s"] = round(ru.ru_utime, 2), round(ru.ru_stime, 2)
    rec["max_rss_mb"] = round(ru.ru_maxrss / 1024, 1)  # Linux: kB
    rec["vm_hwm_mb"] = round(peak_hwm / 1024, 1)
    if a.mock:
        rec["mock_requests_after"] = get(a.mock + "/mock/stats")["requests"]
    # Keep the timeline short: at most ~200 points.
    step = max(1, len(timeline) // 200)
    rec["rss_timeline_mb"] = timeline[::step]
    text = json.dumps(rec)
    if a.json:
        open(a.json, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
