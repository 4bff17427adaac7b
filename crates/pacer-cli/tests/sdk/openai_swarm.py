#!/usr/bin/env python3
"""Many concurrent `AsyncOpenAI` clients sharing one endpoint.

N clients (default 200) send M chat completions in all (default 1000): each
client takes the next request number until none is left, so N requests are in
flight at once. `max_retries=0` makes every 429 or 5xx visible, and the HTTP
client holds a connection per client with a generous timeout (a gateway may
queue a request for minutes: that is the point). Each request's prompt holds
`--label` and its number, so a log can tell requests apart.

Prints ONE JSON object on stdout:
  by_outcome   counts: "ok", an HTTP status ("429", "503"...) or an exception
               type ("APITimeoutError"...)
  start, end   wall-clock times (Unix seconds) of the first send and the last answer
  wall_s       end - start
  retry_after  the retry-after header values seen on 429s, with their counts
  errors       up to 10 examples of failures
  times        with --times: per request {i, priority, start, end, outcome},
               Unix seconds, in request order
Exits 1 when any request did not succeed (unless --allow-errors), 2 on bad usage.

    openai_swarm.py [--base-url URL] [--api-key KEY] [--clients N] [--requests M]
                    [--priority P] [--max-wait S] [--label TEXT] [--stream] [--times]

The base URL defaults to $PACER_BASE_URL, then $OPENAI_BASE_URL; the key to
$PACER_API_KEY, then $OPENAI_API_KEY, then `sk-mock-key`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx2
import openai
from sdk_common import add_endpoint_args

MODEL = "gpt-4o-mini"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_endpoint_args(p, ["PACER_BASE_URL", "OPENAI_BASE_URL"], ["PACER_API_KEY", "OPENAI_API_KEY"], "http://127.0.0.1:8787/v1")
    p.add_argument("--clients", type=int, default=200, help="concurrent clients (200)")
    p.add_argument("--requests", type=int, default=1000, help="requests in all (1000)")
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="send x-pacer-priority: P on every request",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=None,
        help="send x-pacer-max-wait: S (seconds) on every request",
    )
    p.add_argument("--label", default="swarm", help="text put in every prompt")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--stream", action="store_true", help="stream every answer")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="per-request timeout, seconds (600)"
    )
    p.add_argument("--times", action="store_true", help="report every request's times")
    p.add_argument(
        "--allow-errors",
        action="store_true",
        help="exit 0 even when some requests failed",
    )
    args = p.parse_args()
    if not args.base_url:
        p.error("no base URL: pass --base-url or set PACER_BASE_URL / OPENAI_BASE_URL")
    if args.clients < 1 or args.requests < 0:
        p.error("--clients must be at least 1 and --requests at least 0")
    return args


def outcome_of(e: BaseException) -> str:
    if isinstance(e, openai.APIStatusError):
        return str(e.status_code)
    return type(e).__name__


async def one(client: openai.AsyncOpenAI, args: argparse.Namespace, i: int) -> None:
    messages = [
        {
            "role": "user",
            "content": f"[{args.label} #{i}] Clean up the OCR text of page {i}.",
        }
    ]
    if args.stream:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=args.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = []
        usage = None
        async for chunk in stream:
            for c in chunk.choices:
                if c.delta.content:
                    text.append(c.delta.content)
            usage = chunk.usage or usage
        if not text or usage is None:
            raise RuntimeError(f"stream {i} ended without text or usage")
    else:
        c = await client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=args.max_tokens
        )
        if not c.choices or not c.choices[0].message.content:
            raise RuntimeError(f"answer {i} has no text")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers: dict[str, str] = {}
    if args.priority is not None:
        headers["x-pacer-priority"] = str(args.priority)
    if args.max_wait is not None:
        headers["x-pacer-max-wait"] = f"{args.max_wait:g}"
    http = httpx2.AsyncClient(
        limits=httpx2.Limits(
            max_connections=args.clients + 10,
            max_keepalive_connections=args.clients + 10,
        ),
        timeout=httpx2.Timeout(args.timeout, connect=30.0),
    )
    client = openai.AsyncOpenAI(
        base_url=args.base_url,
        api_key=args.api_key,
        max_retries=0,
        timeout=args.timeout,
        http_client=http,
    )
    by_outcome: dict[str, int] = {}
    retry_after: dict[str, int] = {}
    errors: list[dict[str, Any]] = []
    times: list[dict[str, Any]] = []
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < args.requests:
            i = next_i
            next_i += 1
            t0 = time.time()
            try:
                await one(client, args, i)
                outcome = "ok"
            except Exception as e:  # every failure is an outcome to count
                outcome = outcome_of(e)
                if isinstance(e, openai.APIStatusError) and e.status_code == 429:
                    ra = e.response.headers.get("retry-after")
                    if ra is not None:
                        retry_after[ra] = retry_after.get(ra, 0) + 1
                if len(errors) < 10:
                    errors.append(
                        {"i": i, "outcome": outcome, "message": str(e)[:300]}
                    )
            t1 = time.time()
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
            if args.times:
                times.append(
                    {
                        "i": i,
                        "priority": args.priority,
                        "start": t0,
                        "end": t1,
                        "outcome": outcome,
                    }
                )

    start = time.time()
    try:
        await asyncio.gather(*(worker() for _ in range(min(args.clients, args.requests))))
    finally:
        end = time.time()
        await client.close()
        await http.aclose()
    result: dict[str, Any] = {
        "requests": args.requests,
        "clients": args.clients,
        "by_outcome": by_outcome,
        "start": start,
        "end": end,
        "wall_s": end - start,
        "retry_after": retry_after,
        "errors": errors,
        "sdk": f"openai {openai.__version__}",
    }
    if args.times:
        result["times"] = sorted(times, key=lambda t: t["i"])
    return result


def main() -> int:
    args = parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, sort_keys=True))
    failed = sum(n for k, n in result["by_outcome"].items() if k != "ok")
    return 1 if failed and not args.allow_errors else 0


if __name__ == "__main__":
    sys.exit(main())
