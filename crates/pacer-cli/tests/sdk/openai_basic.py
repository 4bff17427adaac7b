#!/usr/bin/env python3
"""The official `openai` SDK against an OpenAI-compatible base URL.

Makes one call of each kind a real client makes (a chat completion, a
streamed chat completion with usage, a chat with a function tool, an
embeddings call, a model list) with `max_retries=0`, so any 429 or 5xx is
visible instead of being retried away by the SDK. Prints ONE JSON object on
stdout: each call's result (ids, text, usage, chunk counts) and the response
headers it got. Exits 1 if any call failed (the JSON then has `errors`),
2 on bad usage.

    openai_basic.py [--base-url URL] [--api-key KEY] [--header NAME:VALUE]...

The base URL defaults to $PACER_BASE_URL, then $OPENAI_BASE_URL; the key to
$PACER_API_KEY, then $OPENAI_API_KEY, then `sk-mock-key`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

import openai
from sdk_common import add_endpoint_args, extra_headers, run_calls

MODEL = "gpt-4o-mini"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_endpoint_args(p, ['PACER_BASE_URL', 'OPENAI_BASE_URL'], ['PACER_API_KEY', 'OPENAI_API_KEY'], "http://127.0.0.1:8787/v1")
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
        p.error("no base URL: pass --base-url or set PACER_BASE_URL / OPENAI_BASE_URL")
    return args


def headers_of(raw: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in raw.headers.items()}


def usage_of(usage: Any) -> dict[str, Any] | None:
    return usage.model_dump(exclude_none=True) if usage is not None else None


def chat(client: openai.OpenAI) -> dict[str, Any]:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You clean up OCR text."},
            {"role": "user", "content": "Clean up: 'Tbe qnick brown f0x'."},
        ],
        max_tokens=32,
    )
    c = raw.parse()
    return {
        "status": raw.status_code,
        "id": c.id,
        "object": c.object,
        "model": c.model,
        "finish_reason": c.choices[0].finish_reason,
        "text": c.choices[0].message.content,
        "usage": usage_of(c.usage),
        "headers": headers_of(raw),
    }


def stream(client: openai.OpenAI) -> dict[str, Any]:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Stream a short sentence about pacing."}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = 0
    text = []
    ids = set()
    finish_reason = None
    usage = None
    usage_chunk_choices = None
    for chunk in raw.parse():
        chunks += 1
        ids.add(chunk.id)
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
        if chunk.usage is not None:
            usage = usage_of(chunk.usage)
            usage_chunk_choices = len(chunk.choices)
    return {
        "status": raw.status_code,
        "chunks": chunks,
        "ids": sorted(i for i in ids if i),
        "text": "".join(text),
        "finish_reason": finish_reason,
        "usage": usage,
        # OpenAI sends usage in a last chunk with no choices.
        "usage_chunk_choices": usage_chunk_choices,
        "headers": headers_of(raw),
    }


def tools(client: openai.OpenAI) -> dict[str, Any]:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Lyon?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The current weather in a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        tool_choice="auto",
        max_tokens=32,
    )
    c = raw.parse()
    msg = c.choices[0].message
    calls = [
        {"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
        for t in (msg.tool_calls or [])
    ]
    return {
        "status": raw.status_code,
        "id": c.id,
        "finish_reason": c.choices[0].finish_reason,
        "text": msg.content,
        "tool_calls": calls,
        "usage": usage_of(c.usage),
        "headers": headers_of(raw),
    }


def embeddings(client: openai.OpenAI) -> dict[str, Any]:
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small",
        input=["the quick brown fox", "jumps over the lazy dog"],
    )
    e = raw.parse()
    return {
        "status": raw.status_code,
        "model": e.model,
        "count": len(e.data),
        "indices": [d.index for d in e.data],
        "dimensions": len(e.data[0].embedding) if e.data else 0,
        "usage": usage_of(e.usage),
        "headers": headers_of(raw),
    }


def models(client: openai.OpenAI) -> dict[str, Any]:
    raw = client.models.with_raw_response.list()
    page = raw.parse()
    return {
        "status": raw.status_code,
        "ids": [m.id for m in page.data],
        "headers": headers_of(raw),
    }


def main() -> int:
    args = parse_args()
    client = openai.OpenAI(
        base_url=args.base_url,
        api_key=args.api_key,
        max_retries=0,
        timeout=args.timeout,
        default_headers=extra_headers(args.header),
    )
    calls: list[tuple[str, Callable[[openai.OpenAI], dict[str, Any]]]] = [
        ("chat", chat),
        ("stream", stream),
        ("tools", tools),
        ("embeddings", embeddings),
        ("models", models),
    ]
    return run_calls(client, calls, f"openai {openai.__version__}", openai.APIStatusError)


if __name__ == "__main__":
    sys.exit(main())
