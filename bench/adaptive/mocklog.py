#!/usr/bin/env python3
"""Read a running `pacer mock`'s request log and compute the pacing figures.

  mocklog.py dump URL FILE                   save every /mock/log entry (JSON lines)
  mocklog.py unknown FILE --limit-rpm N      issue 4 fig. 1: share of the limit used, 429 share
  mocklog.py outage FILE --start S --end E --limit-rpm N
                                             issue 4 fig. 3: sent while down, time to full pace
  mocklog.py span FILE                       first/last chat request, counts by status

Only `/v1/*` requests other than `GET /v1/models` (the key check) count.
Times: `at_ms` is milliseconds since the mock started.
"""
import argparse
import bisect
import json
import sys
import urllib.request


def get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def dump(url, path):
    url = url.rstrip("/")
    if not url.startswith("http://127.0.0.1:"):
        sys.exit("mocklog: loopback URLs only")
    since, n = 0, 0
    with open(path, "w") as f:
        for _ in range(10_000):  # bounded: 10,000 pages of 5,000
            rows = get(f"{url}/mock/log?since={since}&limit=5000")
            if not rows:
                break
            for r in rows:
                f.write(json.dumps(r) + "\n")
            n += len(rows)
            since = rows[-1]["seq"] + 1
    print(n)


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["path"].startswith("/v1/") and r["path"] != "/v1/models":
                rows.append(r)
    rows.sort(key=lambda r: r["seq"])
    return rows


def count_in(times, a, b):
    """Entries of the sorted list `times` in [a, b)."""
    return bisect.bisect_left(times, b) - bisect.bisect_left(times, a)


def unknown(a):
    rows = load(a.file)
    t0 = rows[0]["at_ms"]
    t_end = rows[-1]["at_ms"]
    ok = [r["at_ms"] - t0 for r in rows if r["status"] == 200]
    r429 = [r["at_ms"] - t0 for r in rows if r["status"] == 429]
    allt = [r["at_ms"] - t0 for r in rows]
    span = t_end - t0
    lim = a.limit_rpm
    minutes = []
    for m in range(int(span // 60000) + 1):
        lo, hi = m * 60000, (m + 1) * 60000
        minutes.append({
            "minute": m,
            "complete": hi <= span,
            "sent": count_in(allt, lo, hi),
            "accepted": count_in(ok, lo, hi),
            "r429": count_in(r429, lo, hi),
            "share_of_limit": round(count_in(ok, lo, hi) / lim, 4),
        })
    # Minutes 1-5: the five minutes after the first (learning) minute.
    m15 = [m for m in minutes if 1 <= m["minute"] <= 5]
    m15_complete = all(m["complete"] for m in m15) and len(m15) == 5
    acc15 = sum(m["accepted"] for m in m15)
    # Same figure for minutes 0-4, i.e. learning included.
    m04 = [m for m in minutes if m["minute"] <= 4]
    acc04 = sum(m["accepted"] for m in m04)
    # Time to 90%: trailing 10-s window of accepted requests >= 0.9 * limit/6.
    need = 0.9 * lim / 6
    first90 = None
    sustained90 = None
    step = 500
    t = 10000
    last_bad = None
    while t <= span:
        c = count_in(ok, t - 10000, t)
        if c >= need and first90 is None:
            first90 = t
        if c < need and t < span - 15000:  # ignore the tail where the queue runs dry
            last_bad = t
        t += step
    sustained90 = (last_bad + step) if last_bad is not None else 10000
    out = {
        "t0_ms_mock": t0,
        "run_span_s": round(span / 1000, 1),
        "requests_sent": len(allt),
        "accepted": len(ok),
        "r429": len(r429),
        "share_429": round(len(r429) / len(allt), 4),
        "other_status": {str(k): v for k, v in _by_status(rows).items() if k not in (200, 429)},
        "minutes": minutes,
        "minutes_1_5_share_of_limit": round(acc15 / (lim * len(m15)), 4) if m15 else None,
        "minutes_1_5_complete": m15_complete,
        "minutes_0_4_share_of_limit": round(acc04 / (lim * max(1, len(m04))), 4),
        "time_to_90pct_s": first90 / 1000 if first90 is not None else None,
        "sustained_90pct_from_s": sustained90 / 1000,
        "target_share_ge_0_90": (acc15 / (lim * 5) >= 0.90) if m15_complete else None,
        "target_429_le_3pct": len(r429) / len(allt) <= 0.03,
        "target_90pct_within_60s": first90 is not None and first90 <= 60000,
    }
    print(json.dumps(out))


def _by_status(rows):
    d = {}
    for r in rows:
        d[r["status"]] = d.get(r["status"], 0) + 1
    return d


def outage(a):
    rows = load(a.file)
    lo, hi = a.start * 1000, a.end * 1000
    during = [r for r in rows if lo <= r["at_ms"] < hi]
    ok = [r["at_ms"] for r in rows if r["status"] == 200]
    need = 0.9 * a.limit_rpm / 6
    full = None
    t = hi
    last = rows[-1]["at_ms"]
    while t + 10000 <= last:  # bounded by the log's end
        if count_in(ok, t, t + 10000) >= need:
            full = t
            break
        t += 100
    first_ok_after = next((r["at_ms"] for r in rows if r["at_ms"] >= hi and r["status"] == 200), None)
    per_s = {}
    for s in range(int(a.start) - 5, int(a.end) + 30):
        per_s[s] = count_in(ok, s * 1000, (s + 1) * 1000)
    out = {
        "sent_during_outage": len(during),
        "during_by_status": {str(k): v for k, v in _by_status(during).items()},
        "first_200_after_recovery_s": round((first_ok_after - hi) / 1000, 3) if first_ok_after is not None else None,
        "full_pace_window_start_after_recovery_s": round((full - hi) / 1000, 1) if full is not None else None,
        "full_pace_reached_at_s": round((full + 10000 - hi) / 1000, 1) if full is not None else None,
        "accepted_per_second_around_outage": per_s,
        "requests_total": len(rows),
        "by_status": {str(k): v for k, v in _by_status(rows).items()},
        "first_request_ms": rows[0]["at_ms"],
        "last_request_ms": last,
    }
    print(json.dumps(out))


def span(a):
    rows = load(a.file)
    print(json.dumps({
        "first_ms": rows[0]["at_ms"], "last_ms": rows[-1]["at_ms"],
        "span_s": (rows[-1]["at_ms"] - rows[0]["at_ms"]) / 1000,
        "requests": len(rows),
        "by_status": {str(k): v for k, v in _by_status(rows).items()},
    }))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump"); d.add_argument("url"); d.add_argument("file")
    u = sub.add_parser("unknown"); u.add_argument("file"); u.add_argument("--limit-rpm", type=float, required=True)
    o = sub.add_parser("outage"); o.add_argument("file"); o.add_argument("--start", type=float, required=True)
    o.add_argument("--end", type=float, required=True); o.add_argument("--limit-rpm", type=float, required=True)
    s = sub.add_parser("span"); s.add_argument("file")
    a = ap.parse_args()
    if a.cmd == "dump":
        dump(a.url, a.file)
    elif a.cmd == "unknown":
        unknown(a)
    elif a.cmd == "outage":
        outage(a)
    else:
        span(a)


if __name__ == "__main__":
    main()
