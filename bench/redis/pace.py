#!/usr/bin/env python3
"""Issue 11, shared limits on Redis: the aggregate pace of 1, 2 and 4
`pacer run`s sharing one limit through one `redis-server`, the same without
Redis (the failure mode: the limit times the processes), and what Redis
costs a request. Everything on 127.0.0.1; every wait bounded; everything
started is killed on exit. One JSON line per case on stdout.

  pace.py [N=600]

Pace cases: a fresh `pacer mock --rpm 600 --window 1` (a bucket of 10,
10 a second) per case; N requests in all, split between the processes
(`pacer run` with no rate flags: the limit comes from the headers).
Figures: wall from launch to the last exit; the mock's first-to-last
request span; the physical minimum (N - 10) / 10 s; wall and span over it;
the 429 share of all the mock answered; Redis round trips a request
(EVALSHA calls from INFO commandstats over the requests sent) and Redis's
own time a call.

Overhead case: an unlimited mock, one process, N_OVER requests at
--concurrency 64, with and without --redis: the difference in wall time over
the requests is what a request's Redis round trip adds to the run's pace
(the dispatcher admits one request at a time).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PACER = os.environ.get("PACER", os.path.join(ROOT, "target", "release", "pacer"))
WORK = os.environ.get("BENCH_WORK", "/tmp/pacer-bench-redis")
KEY = "sk-mock-key"
started = []


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def kill_all():
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_mock(flags):
    p = subprocess.Popen([PACER, "mock", "--listen", "127.0.0.1:0", *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started.append(p)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on http://127.0.0.1:"):
        sys.exit(f"the mock did not start: {line!r}")
    return p, line.removeprefix("listening on ")


def redis_cli(port, *args):
    r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10)
    return r.stdout


def start_redis():
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(p)
    for _ in range(100):
        if redis_cli(port, "PING").strip() == "PONG":
            return p, port
        time.sleep(0.05)
    sys.exit("redis-server did not answer PING in 5 s")


def evalsha_stats(port):
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            f = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
            return int(f["calls"]), float(f["usec_per_call"])
    return 0, 0.0


def write_jobs(path, prefix, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({
                "custom_id": f"{prefix}{i:05d}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "max_tokens": 20,
                         "messages": [{"role": "user", "content": f"Clean up document {prefix}{i:05d}."}]},
            }) + "\n")


def run_processes(base, procs, n, redis_port, extra=()):
    env = dict(os.environ, OPENAI_API_KEY=KEY, OPENAI_BASE_URL=base + "/v1")
    env.pop("PACER_LOG", None)
    each = n // procs
    runs = []
    t0 = time.monotonic()
    for i in range(procs):
        d = os.path.join(WORK, f"p{procs}-{i}-{time.time_ns()}")
        os.makedirs(d)
        write_jobs(os.path.join(d, "jobs.jsonl"), chr(ord("a") + i), each)
        cmd = [PACER, "run", "jobs.jsonl", "--json", "--progress", "none", *extra]
        if redis_port:
            cmd += ["--redis", f"redis://127.0.0.1:{redis_port}"]
        p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(p)
        runs.append(p)
    codes = []
    for p in runs:
        try:
            p.wait(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
        codes.append(p.returncode)
    return time.monotonic() - t0, codes, each * procs


def span(base):
    log = get(base + "/mock/log")
    at = [e["at_ms"] for e in log if e["path"] == "/v1/chat/completions"]
    return (max(at) - min(at)) / 1000 if at else 0.0


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "load_1m": round(os.getloadavg()[0], 2), "git": git,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def pace_case(procs, n, shared):
    mock, base = start_mock(["--rpm", "600", "--window", "1"])
    redis_port = None
    if shared:
        rp, redis_port = start_redis()
    wall, codes, total = run_processes(base, procs, n, redis_port)
    stats = get(base + "/mock/stats")
    s = span(base)
    minimum = (total - 10) / 10
    calls, usec = evalsha_stats(redis_port) if shared else (0, 0.0)
    chats = sum(1 for e in get(base + "/mock/log") if e["path"] == "/v1/chat/completions")
    out = {
        "case": f"{procs} process(es), {'one Redis' if shared else 'no Redis'}", "requests": total,
        "exit_codes": codes, "wall_s": round(wall, 1), "span_s": round(s, 1), "minimum_s": minimum,
        "wall_over_min": round(wall / minimum, 3), "span_over_min": round(s / minimum, 3),
        "mock_requests": stats["requests"], "mock_429": stats["by_status"].get("429", 0),
        "share_429": round(stats["by_status"].get("429", 0) / max(1, stats["requests"]), 4),
        "redis_calls_per_request": round(calls / max(1, chats), 2) if shared else None,
        "redis_usec_per_call": usec if shared else None, **machine(),
    }
    mock.kill()
    if shared:
        rp.kill()
    print(json.dumps(out), flush=True)


def overhead_case(n):
    walls = {}
    for shared in (False, True):
        mock, base = start_mock([])
        redis_port = start_redis()[1] if shared else None
        wall, codes, _ = run_processes(base, 1, n, redis_port, extra=["--concurrency", "64"])
        walls[shared] = wall
        calls, usec = evalsha_stats(redis_port) if shared else (0, 0.0)
        mock.kill()
        print(json.dumps({"case": f"overhead, unlimited mock, 1 process, {'one Redis' if shared else 'no Redis'}",
                          "requests": n, "exit_codes": codes, "wall_s": round(wall, 2),
                          "per_request_ms": round(wall / n * 1000, 3),
                          "redis_calls_per_request": round(calls / n, 2) if shared else None,
                          "redis_usec_per_call": usec if shared else None, **machine()}), flush=True)
    print(json.dumps({"case": "overhead: added wall a request with --redis",
                      "added_ms": round((walls[True] - walls[False]) / n * 1000, 3)}), flush=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    os.makedirs(WORK, exist_ok=True)
    if not os.access(PACER, os.X_OK):
        sys.exit(f"{PACER} not found; build it first: cargo build --release -p pacer-cli")
    try:
        for procs, shared in ((1, True), (2, True), (4, True), (2, False)):
            pace_case(procs, n, shared)
        overhead_case(int(os.environ.get("N_OVER", "3000")))
    finally:
        kill_all()


if __name__ == "__main__":
    main()
