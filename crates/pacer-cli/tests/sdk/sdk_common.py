"""What the SDK client scripts share: their common flags, the error report,
and running a list of calls into ONE JSON object on stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable


def add_endpoint_args(p: argparse.ArgumentParser, base_envs: list[str], key_envs: list[str], example: str) -> None:
    """--base-url (from the first of `base_envs` set) and --api-key (from
    `key_envs`, else the simulator's key)."""
    p.add_argument(
        "--base-url",
        default=next((os.environ[e] for e in base_envs if os.environ.get(e)), None),
        help=f"base URL, e.g. {example}",
    )
    p.add_argument(
        "--api-key",
        default=next((os.environ[e] for e in key_envs if os.environ.get(e)), "sk-mock-key"),
    )


def extra_headers(specs: list[str]) -> dict[str, str] | None:
    """`NAME:VALUE` flags as a header dict; exits 2 on a bad one."""
    extra = {}
    for h in specs:
        name, sep, value = h.partition(":")
        if not sep:
            print(f"--header wants NAME:VALUE, got {h!r}", file=sys.stderr)
            sys.exit(2)
        extra[name.strip()] = value.strip()
    return extra or None


def error_of(e: BaseException, status_error: type) -> dict[str, Any]:
    """A failure as JSON: its type and message, and for an HTTP error its
    status and headers (so tests can look for keys in them)."""
    out: dict[str, Any] = {"type": type(e).__name__, "message": str(e)[:500]}
    if isinstance(e, status_error):
        out["status"] = e.status_code
        out["headers"] = {k.lower(): v for k, v in e.response.headers.items()}
    else:
        out["traceback"] = traceback.format_exc(limit=3)[-1500:]
    return out


def run_calls(client: Any, calls: list[tuple[str, Callable[[Any], dict[str, Any]]]], sdk: str, status_error: type) -> int:
    """Makes every call (a failure does not stop the others), prints one JSON
    object, and returns the exit status: 1 if any call failed."""
    results: dict[str, Any] = {"sdk": sdk}
    errors: dict[str, Any] = {}
    for name, call in calls:
        try:
            results[name] = call(client)
        except Exception as e:  # every failure is reported, none is fatal to the others
            errors[name] = error_of(e, status_error)
    if errors:
        results["errors"] = errors
    print(json.dumps(results, sort_keys=True))
    return 1 if errors else 0
