#!/usr/bin/env python3
"""Write a folder of OCR-like text documents for the splitting benchmark.

  gen_docs.py DIR MB [--lang en|mixed] [--doc-kb 100] [--seed 6]

Documents of about DOC_KB kilobytes (UTF-8 bytes), in paragraphs of 2-8
sentences separated by blank lines, with the odd very long "sentence" (a
table row run) so the splitter's sentence and word fallbacks are exercised.
`mixed` draws sentences from English, Vietnamese, Japanese and code.
"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_mixed import CODE, EN, JA, VI  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("mb", type=float)
    ap.add_argument("--lang", choices=["en", "mixed"], default="en")
    ap.add_argument("--doc-kb", type=int, default=100)
    ap.add_argument("--seed", type=int, default=6)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    pools = [EN] if a.lang == "en" else [EN, VI, JA, CODE]
    os.makedirs(a.dir, exist_ok=True)
    total, target, i = 0, int(a.mb * 1_000_000), 0
    while total < target:
        paras, size = [], 0
        while size < a.doc_kb * 1000:
            if rng.random() < 0.03:  # a table dumped as one endless line
                p = " | ".join(f"{rng.choice(['item', 'qty', 'price', 'total'])} {rng.randint(1, 9999)}"
                               for _ in range(rng.randint(100, 400)))
            else:
                pool = rng.choice(pools)
                p = " ".join(rng.choice(pool) for _ in range(rng.randint(2, 8)))
            paras.append(p)
            size += len(p.encode()) + 2
        data = "\n\n".join(paras)
        with open(os.path.join(a.dir, f"doc-{i:05d}.txt"), "w", encoding="utf-8") as f:
            f.write(data)
        total += len(data.encode())
        i += 1
    print(f"{i} documents, {total} bytes")


if __name__ == "__main__":
    main()
