#!/usr/bin/env python3
"""Write an OpenAI Batch JSONL input for the `pacer run` benchmarks.

Deterministic (seeded), streamed line by line (a million lines never sit in
memory), standard library only.

  gen_input.py N OUT [--mode short|mixed] [--max-tokens N] [--seed S]

short: a one-line prompt of a few words (overhead, memory, resume runs).
mixed: prompts of mixed sizes, 20 to ~1,500 words, log-uniform, so that a
       token limit, not a request limit, sets the pace.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--mode", choices=["short", "mixed"], default="short")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--model", default="gpt-4o-mini")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w", encoding="utf-8", buffering=1 << 20) as f:
        for i in range(a.n):
            if a.mode == "short":
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
                    "messages": [{"role": "user", "content": content}],
                    "max_tokens": a.max_tokens,
                },
            }
            f.write(json.dumps(line, separators=(",", ":")))
            f.write("\n")


if __name__ == "__main__":
    main()
