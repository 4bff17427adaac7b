#!/usr/bin/env python3
"""Write N small chat-completion lines in OpenAI Batch JSONL (deterministic).

  gen_batch.py N OUT [--max-tokens 32]

The requests are short on purpose: these benchmarks measure pacing, and no
token limit is set, so only the number of requests matters.
"""
import argparse
import json
import random

WORDS = ("invoice receipt total amount due date page contract clause party "
         "signature customer address bank account balance payment tax order").split()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    rng = random.Random(4)
    with open(a.out, "w", encoding="utf-8") as f:
        for i in range(a.n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40)))
            line = {
                "custom_id": f"req-{i:06d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Document {i}: {text}"}],
                    "max_tokens": a.max_tokens,
                },
            }
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
