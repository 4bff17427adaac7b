#!/usr/bin/env python3
"""Write pacer's compact vocabulary files from tiktoken's.

    python3 make_vocab.py o200k_base.tiktoken o200k_base.bin
    python3 make_vocab.py cl100k_base.tiktoken cl100k_base.bin

Input: a `.tiktoken` file as OpenAI publishes it (one `base64(token) rank`
line per token; the same files ship inside the tiktoken-rs crate, under
`assets/`; sha256 446a9538…b6c348e3…1a2d for o200k_base, 223921b7…a2b7
for cl100k_base, the hashes tiktoken itself checks). Output: every token in rank order as one length byte and the
token's bytes, nothing else. The ranks must run 0..n with no gap: the rank
is the position. `tokens/bpe.rs` reads this at start-up into a table of a
few MB (tiktoken-rs held 60-80 MB for the same vocabulary), and the test
`vocabularies_are_tiktokens` checks every token against tiktoken-rs.
"""
import base64
import sys


def main(src: str, dst: str) -> None:
    tokens = {}
    with open(src, encoding="ascii") as f:
        for line in f:
            if not line.strip():
                continue
            token, rank = line.split()
            tokens[int(rank)] = base64.b64decode(token)
    if sorted(tokens) != list(range(len(tokens))):
        sys.exit(f"{src}: ranks are not 0..{len(tokens)}")
    out = bytearray()
    for rank in range(len(tokens)):
        token = tokens[rank]
        if not 1 <= len(token) <= 255:
            sys.exit(f"{src}: token {rank} is {len(token)} bytes")
        out.append(len(token))
        out += token
    with open(dst, "wb") as f:
        f.write(out)
    print(f"{dst}: {len(tokens)} tokens, {len(out)} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
