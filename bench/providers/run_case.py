#!/usr/bin/env python3
"""Run one issue-9 case: the real `pacer run` (no rate flags) against a
`pacer mock` on 127.0.0.1 with a free port, then print one JSON line.

  run_case.py NAME N [--check-at-pace 1.1] [--timeout 240] -- MOCK FLAGS...

Figures: wall time; the physical minimum, from the mock's own limits and
count (requests: (N - bucket) / (rpm/60); tokens: (tokens the limiter
charged - bucket) / (tpm/60); the larger, where a bucket holds limit × window/60);
wall / minimum; the 429 share of everything the mock answered (/mock/stats);
failed requests. With --check-at-pace F the run is stopped at F × the
requests minimum and the done fraction is read with `pacer status --json`.
Every wait is bounded; everything started is killed on exit.
"""
import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PACER = os.environ.get("PACER", os.path.join(ROOT, "target", "release", "pacer"))
WORK = os.environ.get("BENCH_WORK", "/tmp/pacer-bench-providers")
started = []


def flag(flags, name, cast=float):
    return cast(flags[flags.index(name) + 1]) if name in flags else None


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def stop(p, grace=5.0):
    """SIGINT, then a second SIGINT (pacer's 'quit at once'), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 3.0), (signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        if p.poll() is not None:
            return p.returncode
        p.send_signal(sig)
        try:
            return p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    return p.poll()


def start_mock(flags, name):
    err = open(os.path.join(WORK, f"{name}.mock.err"), "w")
    p = subprocess.Popen([PACER, "mock", "--listen", "127.0.0.1:0", *flags],
                         stdout=subprocess.PIPE, stderr=err, text=True)
    started.append(p)
    line = p.stdout.readline().strip()  # the mock prints its address first
    if not line.startswith("listening on http://127.0.0.1:"):
        sys.exit(f"the mock did not start: {line!r}")
    return line.removeprefix("listening on ")


def status(db):
    r = subprocess.run([PACER, "status", db, "--json"], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else None


def machine():
    cpu = ""
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "load_1m": round(os.getloadavg()[0], 2), "git": git,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("n", type=int)
    ap.add_argument("--check-at-pace", type=float)
    ap.add_argument("--timeout", type=float, default=240)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    flags = argv[cut + 1:]
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    if not os.access(PACER, os.X_OK):
        sys.exit(f"{PACER} not found; build it: cargo build --release -p pacer-cli")

    inp = os.path.join(WORK, f"input-{a.n}.jsonl")
    if not os.path.exists(inp):
        subprocess.run([sys.executable, os.path.join(HERE, "gen.py"), str(a.n), inp], check=True)
    out = os.path.join(WORK, f"{a.name}.results.jsonl")
    db = out[: -len(".jsonl")] + ".pacer.db"
    for f in (out, db, db + "-wal", db + "-shm"):
        if os.path.exists(f):
            os.remove(f)

    rpm, tpm = flag(flags, "--rpm"), flag(flags, "--tpm")
    window = flag(flags, "--window") or 60.0
    cap = lambda limit: max(1, math.ceil(limit * window / 60 - 1e-9))
    req_min = max(0, a.n - cap(rpm)) / (rpm / 60) if rpm else 0.0

    url = start_mock(flags, a.name)
    cmd = [PACER, "run", inp, "-o", out, "--base-url", url + "/v1", "--json", "--progress", "none"]
    # PACER_ARGS: extra flags for `pacer run` (e.g. `--log-format json` with
    # PACER_LOG=pacer=debug, to see where the 429s come from in NAME.stderr).
    cmd += os.environ.get("PACER_ARGS", "").split()
    env = dict(os.environ, OPENAI_API_KEY="sk-mock-key")
    env.pop("OPENAI_BASE_URL", None)
    t0 = time.monotonic()
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(WORK, f"{a.name}.stderr"), "w"),
                           text=True, env=env)
    started.append(run)
    checked = None
    if a.check_at_pace:
        at = req_min * a.check_at_pace
        while time.monotonic() - t0 < at and run.poll() is None:
            time.sleep(0.2)
        checked = {"at_s": round(time.monotonic() - t0, 1), "status": status(db)}
        rc = stop(run)
        timed_out = False
    else:
        try:
            run.wait(timeout=a.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        rc = stop(run)
    wall = time.monotonic() - t0
    text = run.stdout.read() if run.stdout else ""
    summary = None
    for l in reversed(text.strip().splitlines()):
        try:
            summary = json.loads(l)
            break
        except ValueError:
            pass
    stats = get(url + "/mock/stats")
    final = status(db)
    tok_min = max(0, stats["tokens_charged"] - cap(tpm)) / (tpm / 60) if tpm else 0.0
    minimum = max(req_min, tok_min)
    r429 = stats["by_status"].get("429", 0)
    done = (final or {}).get("done")
    rec = {
        "case": a.name, "n": a.n, "mock_flags": " ".join(flags), "pacer_command": " ".join(cmd),
        "exit_code": rc, "timed_out": timed_out,
        "wall_s": round(summary["wall_s"] if summary and not a.check_at_pace else wall, 1),
        "min_requests_s": round(req_min, 1), "min_tokens_s": round(tok_min, 1), "min_s": round(minimum, 1),
        "ratio": round(wall / minimum, 2) if minimum and not a.check_at_pace else None,
        "share_429": round(r429 / max(1, stats["requests"]), 4), "r429": r429,
        "mock_requests": stats["requests"], "tokens_charged": stats["tokens_charged"],
        "failed": (summary or final or {}).get("failed"), "done": done, "hangs": stats.get("hangs"),
        "checked": checked, "summary": summary, "machine": machine(),
    }
    if a.check_at_pace and checked and checked["status"]:
        rec["done_share_at_check"] = round(checked["status"]["done"] / a.n, 4)
    json.dump(rec, open(os.path.join(HERE, "results", f"{a.name}.json"), "w"), indent=1)
    short = {k: rec[k] for k in ("case", "wall_s", "min_s", "ratio", "share_429", "failed", "done", "exit_code", "timed_out")}
    if "done_share_at_check" in rec:
        short |= {"check_at_s": checked["at_s"], "done_share_at_check": rec["done_share_at_check"], "hangs": rec["hangs"]}
    print(json.dumps(short), flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in started:
            stop(p)
