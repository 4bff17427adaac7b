#!/usr/bin/env python3
"""Issue 11, shared jobs on Redis: throughput with Redis against SQLite
(limits off), and the time to reclaim a killed worker's requests.
Everything on 127.0.0.1; every wait bounded; everything started is killed
on exit. One JSON line per case on stdout.

  jobs.py [N=20000]

Throughput: an unlimited, zero-latency mock; N short chat requests at
--concurrency 64; `pacer run` on its SQLite state, then `pacer run --redis
--job` alone, then the same plus one `pacer worker` (two processes on one
machine: they share its two cores). req/s = N / wall from launch to the
last exit; Redis calls a request from INFO commandstats (every command,
and the scripts alone).

Pace: one job of 600 requests, a run and 0, 1 or 3 workers, against the
simulator at 600 a minute over a 1-s window: the first-to-last request
span over the physical minimum (59 s) and the 429 share.

Reclaim: a mock at 1200 requests a minute with 500 ms latency, 600
requests, a run and a worker (--concurrency 16) with --lease 5s; the worker
is SIGKILLed when 150 are finished. Reclaim time: from the kill until the
dead worker owns nothing in the job's consumer group (XPENDING), i.e. every
request it held was handed to a live worker.
"""
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pace  # noqa: E402  (the shared helpers: mock, redis, processes)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000


def env_for(base):
    env = dict(os.environ, OPENAI_API_KEY=pace.KEY, OPENAI_BASE_URL=base + "/v1")
    env.pop("PACER_LOG", None)
    return env


def workdir(name):
    d = os.path.join(pace.WORK, f"{name}-{time.time_ns()}")
    os.makedirs(d)
    return d


def spawn(cmd, cwd, env):
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    pace.started.append(p)
    return p


def wait_all(procs, timeout=900):
    codes = []
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
        codes.append(p.returncode)
    return codes


def meta(port, job, field):
    return pace.redis_cli(port, "HGET", f"pacer:job:v1:{{{job}}}:meta", field).strip()


def wait_meta(port, job, field, ok, limit=120):
    t = time.monotonic()
    while time.monotonic() - t < limit:
        v = meta(port, job, field)
        if v and ok(v):
            return
        time.sleep(0.05)
    sys.exit(f"the job's {field} never got there")


def throughput(mode):
    _, base = pace.start_mock([])
    redis_port = None
    if mode != "sqlite":
        _, redis_port = pace.start_redis()
    d = workdir(f"thr-{mode}")
    pace.write_jobs(os.path.join(d, "jobs.jsonl"), "t", N)
    env = env_for(base)
    cmd = [pace.PACER, "run", "jobs.jsonl", "--json", "--progress", "none", "--concurrency", "64"]
    if redis_port:
        cmd += ["--redis", f"redis://127.0.0.1:{redis_port}", "--job", "thr"]
    t0 = time.monotonic()
    procs = [spawn(cmd, d, env)]
    if mode == "redis+worker":
        wait_meta(redis_port, "thr", "state", lambda s: s == "ready")
        procs.append(spawn([pace.PACER, "worker", "--redis", f"redis://127.0.0.1:{redis_port}",
                            "--job", "thr", "--progress", "none", "--concurrency", "64"], d, env))
    codes = wait_all(procs)
    wall = time.monotonic() - t0
    lines = sum(1 for _ in open(os.path.join(d, "jobs.results.jsonl")))
    calls = {}
    if redis_port:
        for line in pace.redis_cli(redis_port, "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, fields = line.split(":", 1)
                f = dict(kv.split("=") for kv in fields.split(","))
                calls[name.removeprefix("cmdstat_")] = int(f["calls"])
    pace.kill_all()
    pace.started.clear()
    out = {"case": f"throughput/{mode}", "n": N, "wall_s": round(wall, 2),
           "req_per_s": round(N / wall), "exit_codes": codes, "output_lines": lines}
    if calls:
        # commandstats counts the commands scripts run too: what a client
        # sends is EVALSHA/EVAL and what the loader and readers send.
        inside = {"xautoclaim", "xreadgroup", "hincrby", "hincrbyfloat", "hexists", "hsetnx",
                  "xack", "xdel", "xpending", "xclaim", "zadd", "zremrangebyscore", "zcard",
                  "pexpire", "expire", "time", "get", "set", "hget", "hmget", "hset", "xadd"}
        out["evalsha_per_request"] = round((calls.get("evalsha", 0) + calls.get("eval", 0)) / N, 3)
        out["commands_per_request"] = {k: round(v / N, 3) for k, v in sorted(calls.items())
                                       if v >= N / 100 or k not in inside}
    return out


def job_pace(procs, n=600):
    """One job, `procs` processes (a run and procs-1 workers), against one
    limit: the simulator at 600 a minute over a 1-s window (a bucket of 10,
    10 a second). Minimum: (n - 10) / 10 s."""
    _, base = pace.start_mock(["--rpm", "600", "--window", "1"])
    _, port = pace.start_redis()
    d = workdir(f"pace-{procs}")
    pace.write_jobs(os.path.join(d, "jobs.jsonl"), "p", n)
    env = env_for(base)
    url = f"redis://127.0.0.1:{port}"
    t0 = time.monotonic()
    procs_ = [spawn([pace.PACER, "run", "jobs.jsonl", "--json", "--progress", "none",
                     "--redis", url, "--job", "pj"], d, env)]
    if procs > 1:
        wait_meta(port, "pj", "state", lambda s: s == "ready")
        for _ in range(procs - 1):
            procs_.append(spawn([pace.PACER, "worker", "--redis", url, "--job", "pj",
                                 "--progress", "none"], d, env))
    codes = wait_all(procs_)
    wall = time.monotonic() - t0
    stats = pace.get(base + "/mock/stats")
    span = pace.span(base)
    minimum = (n - 10) / 10
    lines = sum(1 for _ in open(os.path.join(d, "jobs.results.jsonl")))
    n429 = stats["by_status"].get("429", 0)
    pace.kill_all()
    pace.started.clear()
    return {"case": f"pace/one job, {procs} process(es)", "n": n, "exit_codes": codes,
            "wall_s": round(wall, 1), "span_s": round(span, 1), "minimum_s": minimum,
            "span_over_min": round(span / minimum, 3), "mock_requests": stats["requests"],
            "share_429": round(n429 / max(1, stats["requests"]), 4), "output_lines": lines}


def dead_owns(port, job, pid):
    out = pace.redis_cli(port, "XPENDING", f"pacer:job:v1:{{{job}}}:work", "workers").split()
    # summary: count, first, last, then consumer / count pairs
    for i, tok in enumerate(out):
        if f"-{pid}-" in tok and i + 1 < len(out):
            return int(out[i + 1])
    return 0


def reclaim():
    _, base = pace.start_mock(["--rpm", "1200", "--latency", "500"])
    _, port = pace.start_redis()
    d = workdir("reclaim")
    pace.write_jobs(os.path.join(d, "jobs.jsonl"), "r", 600)
    env = env_for(base)
    url = f"redis://127.0.0.1:{port}"
    run = spawn([pace.PACER, "run", "jobs.jsonl", "--json", "--progress", "none",
                 "--redis", url, "--job", "rc", "--lease", "5s"], d, env)
    wait_meta(port, "rc", "state", lambda s: s == "ready")
    w = spawn([pace.PACER, "worker", "--redis", url, "--job", "rc", "--lease", "5s",
               "--concurrency", "16", "--progress", "none"], d, env)
    wait_meta(port, "rc", "finished", lambda f: int(f) >= 150)
    held = dead_owns(port, "rc", w.pid)
    w.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    w.wait(timeout=10)
    reclaimed = None
    while time.monotonic() - killed < 120:
        if dead_owns(port, "rc", w.pid) == 0:
            reclaimed = time.monotonic() - killed
            break
        time.sleep(0.05)
    codes = wait_all([run])
    stats = pace.get(base + "/mock/stats")
    lines = sum(1 for _ in open(os.path.join(d, "jobs.results.jsonl")))
    pace.kill_all()
    pace.started.clear()
    return {"case": "reclaim", "lease_s": 5, "held_at_kill": held,
            "reclaim_s": None if reclaimed is None else round(reclaimed, 2),
            "duplicate_requests": stats.get("duplicate_requests"),
            "run_exit": codes[0], "output_lines": lines}


def main():
    os.makedirs(pace.WORK, exist_ok=True)
    try:
        print(json.dumps({"machine": pace.machine()}), flush=True)
        for mode in ["sqlite", "redis", "redis+worker"]:
            print(json.dumps(throughput(mode)), flush=True)
        for procs in (1, 2, 4):
            print(json.dumps(job_pace(procs)), flush=True)
        print(json.dumps(reclaim()), flush=True)
    finally:
        pace.kill_all()


if __name__ == "__main__":
    main()
