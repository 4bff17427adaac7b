#!/usr/bin/env python3
"""Realistic request shapes for the issue-9 benchmarks (OpenAI Batch JSONL).

  gen.py N OUT [--seed 9]

About 40% chat with a system prompt and one user turn, 20% multi-turn
(system, user, assistant, user), 15% chat with n=2, 25% embeddings (a string
or a list of 1-4 strings). English prose of 1-8 sentences; max_tokens 40-160.
Sized so 1,000 requests charge roughly 100k-200k tokens: at 600 rpm / 100k
tpm both limits bind. Deterministic for a given seed.
"""
import argparse
import json
import random

SENTENCES = [
    "The invoice lists three items, each with a quantity, a unit price and a total.",
    "Please extract the customer's name, the billing address and the amount due.",
    "The scanned page is rotated and some words are broken across lines.",
    "Payment is due within thirty days of the date shown at the top of the document.",
    "A late fee of two percent per month applies to any unpaid balance.",
    "The contract was signed by both parties on the fourteenth of March.",
    "OCR errors often replace the letter l with the digit 1, and O with 0.",
    "Keep the original layout: headings, lists and tables must stay where they are.",
    "The committee reviewed the quarterly financial statements and approved the budget.",
    "Shipping was delayed because the warehouse inventory system was being upgraded.",
    "Customers reported that the mobile application crashes when uploading photographs.",
    "The quarterly revenue increased considerably while operating expenses remained stable.",
]
SYSTEMS = [
    "You are a careful assistant that cleans up OCR text without changing its meaning.",
    "You extract structured fields from business documents and answer in JSON.",
    "You summarise customer feedback in short, neutral bullet points.",
]


def prose(rng, lo, hi):
    return " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(lo, hi)))


def line(i, rng):
    cid = f"p{i:06d}"
    roll = rng.random()
    # A distinct first sentence per request, so every body is different.
    head = f"Document {cid}."
    if roll < 0.25:
        k = rng.randint(1, 4)
        inputs = [f"{head} {prose(rng, 1, 3)}" for _ in range(k)]
        body = {"model": "text-embedding-3-small", "input": inputs[0] if k == 1 else inputs}
        return {"custom_id": cid, "method": "POST", "url": "/v1/embeddings", "body": body}
    system = {"role": "system", "content": rng.choice(SYSTEMS)}
    if roll < 0.65:
        messages = [system, {"role": "user", "content": f"{head} {prose(rng, 1, 8)}"}]
        body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": rng.choice([40, 80, 120, 160])}
    elif roll < 0.85:
        messages = [system,
                    {"role": "user", "content": f"{head} {prose(rng, 1, 4)}"},
                    {"role": "assistant", "content": prose(rng, 1, 3)},
                    {"role": "user", "content": "Now shorten that to one sentence."}]
        body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": rng.choice([40, 80])}
    else:
        messages = [system, {"role": "user", "content": f"{head} {prose(rng, 1, 4)}"}]
        body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 50, "n": 2}
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=9)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for i in range(a.n):
            f.write(json.dumps(line(i, rng)) + "\n")


if __name__ == "__main__":
    main()
