#!/usr/bin/env python3
"""Write an OpenAI Batch JSONL input for the `pacer run` benchmarks.

Deterministic (seeded), streamed line by line (a million lines never sit in
memory), standard library only.

  gen_input.py N OUT [--mode short|mixed] [--max-tokens N] [--seed S]

short: a one-line prompt of a few words (overhead, memory, resume runs).
mixed: prompts of mixed sizes, 20 to ~1,500 words, log-uniform, so that a
       token limit, not a request limit, sets the pace.
realistic: a fixed ~60-token system prompt and a ~240-word user prompt
       (~300 tokens a request), for the per-request cost runs.
"""
import argparse
import json
import math
import random

WORDS = (
    "date quantity contract receipt total reference amount item due account "
    "address price payment number page customer section balance party order "
    "signature bank clause agreement tax invoice"
).split()

SYSTEM = (
    "You are an assistant that extracts fields from business documents. Read the "
    "document the user gives you and answer with the invoice total, its currency and "
    "its due date, in one short sentence. If a field is missing, say so plainly and "
    "do not guess. Never add commentary."
)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--mode", choices=["short", "mixed", "realistic"], default="short")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--model", default="gpt-4o-mini")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w", encoding="utf-8", buffering=1 << 20) as f:
        for i in range(a.n):
            messages = None
            if a.mode == "realistic":
                content = f"Document {i}: " + " ".join(rng.choice(WORDS) for _ in range(240))
                messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]
            elif a.mode == "short":
                words = " ".join(rng.choice(WORDS) for _ in range(4))
                content = f"Doc {i}: {words}"
            else:
                k = int(math.exp(rng.uniform(math.log(20), math.log(1500))))
                content = f"Document {i}: " + " ".join(rng.choice(WORDS) for _ in range(k))
            line = {
                "custom_id": f"req-{i:07d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": a.model,
                    "messages": messages or [{"role": "user", "content": content}],
                    "max_tokens": a.max_tokens,
                },
            }
            f.write(json.dumps(line, separators=(",", ":")))
            f.write("\n")


if __name__ == "__main__":
    main()
