#!/usr/bin/env python3
"""The official `anthropic` SDK against an Anthropic-compatible base URL.

Makes a `messages.create`, a streamed `messages.stream(...)` (the SDK's
helper, which assembles the final message) and a raw
`messages.create(stream=True)` (counting server-sent events), with
`max_retries=0` so any 429/5xx/529 is visible. Prints ONE JSON object on
stdout: each call's text, usage, event counts and response headers. Exits 1
if any call failed (the JSON then has `errors`), 2 on bad usage.

    anthropic_basic.py [--base-url URL] [--api-key KEY] [--header NAME:VALUE]...

The base URL (without /v1: the SDK adds /v1/messages) defaults to
$PACER_ANTHROPIC_BASE_URL, then $ANTHROPIC_BASE_URL; the key to
$PACER_API_KEY, then $ANTHROPIC_API_KEY, then `sk-mock-key`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

import anthropic
from sdk_common import add_endpoint_args, extra_headers, run_calls

MODEL = "claude-haiku-4-5"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_endpoint_args(p, ['PACER_ANTHROPIC_BASE_URL', 'ANTHROPIC_BASE_URL'], ['PACER_API_KEY', 'ANTHROPIC_API_KEY'], "http://127.0.0.1:8787")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="an extra header on every request (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    if not args.base_url:
        p.error(
            "no base URL: pass --base-url or set PACER_ANTHROPIC_BASE_URL / ANTHROPIC_BASE_URL"
        )
    return args


def headers_of(response: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}


def text_of(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def create(client: anthropic.Anthropic) -> dict[str, Any]:
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=32,
        system="You clean up OCR text.",
        messages=[{"role": "user", "content": "Clean up: 'Tbe qnick brown f0x'."}],
    )
    m = raw.parse()
    return {
        "status": raw.status_code,
        "id": m.id,
        "type": m.type,
        "role": m.role,
        "model": m.model,
        "stop_reason": m.stop_reason,
        "text": text_of(m),
        "usage": m.usage.model_dump(exclude_none=True),
        "headers": headers_of(raw),
    }


def stream_helper(client: anthropic.Anthropic) -> dict[str, Any]:
    events: dict[str, int] = {}
    deltas = []
    with client.messages.stream(
        model=MODEL,
        max_tokens=40,
        messages=[{"role": "user", "content": "Stream a short sentence about pacing."}],
    ) as s:
        for event in s:
            events[event.type] = events.get(event.type, 0) + 1
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
        final = s.get_final_message()
        headers = headers_of(s.response)
        status = s.response.status_code
    return {
        "status": status,
        "id": final.id,
        "events": events,
        "text": text_of(final),
        "delta_text": "".join(deltas),
        "stop_reason": final.stop_reason,
        "usage": final.usage.model_dump(exclude_none=True),
        "headers": headers,
    }


def stream_raw(client: anthropic.Anthropic) -> dict[str, Any]:
    stream = client.messages.create(
        model=MODEL,
        max_tokens=24,
        messages=[{"role": "user", "content": "Another short streamed sentence."}],
        stream=True,
    )
    events: dict[str, int] = {}
    text = []
    input_tokens = None
    output_tokens = None
    for event in stream:
        events[event.type] = events.get(event.type, 0) + 1
        if event.type == "message_start":
            input_tokens = event.message.usage.input_tokens
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            text.append(event.delta.text)
        elif event.type == "message_delta":
            output_tokens = event.usage.output_tokens
    return {
        "status": stream.response.status_code,
        "events": events,
        "text": "".join(text),
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        "headers": headers_of(stream.response),
    }


def main() -> int:
    args = parse_args()
    client = anthropic.Anthropic(
        base_url=args.base_url,
        api_key=args.api_key,
        max_retries=0,
        timeout=args.timeout,
        default_headers=extra_headers(args.header),
    )
    calls: list[tuple[str, Callable[[anthropic.Anthropic], dict[str, Any]]]] = [
        ("create", create),
        ("stream", stream_helper),
        ("stream_raw", stream_raw),
    ]
    return run_calls(client, calls, f"anthropic {anthropic.__version__}", anthropic.APIStatusError)


if __name__ == "__main__":
    sys.exit(main())
