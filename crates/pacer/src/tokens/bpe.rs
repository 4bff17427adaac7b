//! An exact token counter for OpenAI's o200k and cl100k encodings: tiktoken's
//! algorithm (pre-tokenize with the encoding's pattern, then byte-pair merge
//! each piece by rank) on a compact vocabulary.
//!
//! Why not tiktoken-rs: its pattern's look-ahead (`\s+(?!\S)`) makes it run
//! on a backtracking regex engine, which was about half the CPU of a whole
//! `pacer run` (all of it at import), and it holds 60–80 MB for the
//! vocabularies. Why not GitHub's `bpe-openai`: it counts the same and
//! fast, but its prebuilt automata add 48 MB to the binary and ~90 MB of
//! resident memory. Here the pattern runs on `regex-automata` (a lazy DFA)
//! with the look-ahead emulated, and a vocabulary is its token bytes (read
//! from the binary) plus a hash table: ~5 MB for o200k.
//!
//! Counts equal tiktoken's: `count.rs`'s tests compare every token of both
//! vocabularies with tiktoken-rs, texts of every kind with tiktoken-rs, and
//! Python tiktoken's own figures.

use std::sync::OnceLock;

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};

/// Each token in rank order: one length byte, then its bytes
/// (`vocab/make_vocab.py` writes these from tiktoken's files).
const O200K_VOCAB: &[u8] = include_bytes!("vocab/o200k_base.bin");
const CL100K_VOCAB: &[u8] = include_bytes!("vocab/cl100k_base.bin");

/// tiktoken's o200k pattern, its alternatives in order, with the look-ahead
/// alternative `\s+(?!\S)` rewritten: see [`Pretokenizer`].
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+$",
);
/// tiktoken's cl100k pattern, rewritten the same way.
const CL100K_PATTERN: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"|\s*[\r\n]+",
    r"|\s+$",
);

/// One encoding: its pre-tokenizer and its vocabulary.
pub(crate) struct Bpe {
    pre: Pretokenizer,
    ranks: Ranks,
}

/// The o200k encoding, loaded on first use (a few milliseconds).
pub(crate) fn o200k() -> &'static Bpe {
    static BPE: OnceLock<Bpe> = OnceLock::new();
    BPE.get_or_init(|| Bpe::new(O200K_VOCAB, O200K_PATTERN))
}

/// The cl100k encoding, loaded on first use.
pub(crate) fn cl100k() -> &'static Bpe {
    static BPE: OnceLock<Bpe> = OnceLock::new();
    BPE.get_or_init(|| Bpe::new(CL100K_VOCAB, CL100K_PATTERN))
}

impl Bpe {
    fn new(vocab: &'static [u8], pattern: &str) -> Bpe {
        Bpe {
            pre: Pretokenizer::new(pattern),
            ranks: Ranks::new(vocab),
        }
    }

    /// Tokens of `text`, as tiktoken's `encode_ordinary(text).len()`.
    pub(crate) fn count(&self, text: &str) -> usize {
        let mut parts = Vec::new();
        self.pre
            .pieces(text)
            .map(|piece| self.count_piece(piece.as_bytes(), &mut parts))
            .sum()
    }

    /// The rank of a token's bytes, if they are one.
    pub(crate) fn rank(&self, bytes: &[u8]) -> Option<u32> {
        self.ranks.get(bytes)
    }

    /// Tokens of one piece: tiktoken's byte-pair merge, which merges the
    /// adjacent pair whose joined bytes have the lowest rank (the leftmost
    /// on a tie) until no joined pair is a token. `parts` is scratch space.
    fn count_piece(&self, piece: &[u8], parts: &mut Vec<(usize, u32)>) -> usize {
        if piece.len() <= 1 || self.ranks.get(piece).is_some() {
            return 1;
        }
        let rank_of = |bytes: &[u8]| self.rank(bytes).unwrap_or(u32::MAX);
        // parts[i] = (start of part i, rank of part i joined with part i+1);
        // the last entry marks the end of the piece.
        parts.clear();
        parts.extend((0..piece.len() - 1).map(|i| (i, rank_of(&piece[i..i + 2]))));
        parts.push((piece.len() - 1, u32::MAX));
        parts.push((piece.len(), u32::MAX));
        // The leftmost pair of the lowest rank that is a token, if any. A
        // plain loop: this scan is the merge's O(n²) part, and iterator
        // adapters made it several times slower in unoptimized test builds.
        let lowest = |parts: &[(usize, u32)]| {
            let (mut best, mut at) = (u32::MAX, 0);
            for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < best {
                    (best, at) = (rank, i);
                }
            }
            (best != u32::MAX).then_some(at)
        };
        while let Some(i) = lowest(parts) {
            // Part i absorbs part i+1; the pairs on both sides of it change.
            // (Ranks are read before the removal, so part i+1 is skipped.)
            let joined_rank = |parts: &[(usize, u32)], j: usize| {
                if j + 3 < parts.len() {
                    rank_of(&piece[parts[j].0..parts[j + 3].0])
                } else {
                    u32::MAX
                }
            };
            if i > 0 {
                parts[i - 1].1 = joined_rank(parts, i - 1);
            }
            parts[i].1 = joined_rank(parts, i);
            parts.remove(i + 1);
        }
        parts.len() - 1
    }
}

/// tiktoken's pre-tokenizer without a backtracking engine.
///
/// tiktoken's patterns end in `\s+(?!\S)|\s+`: a run of whitespace
/// followed by a non-space is one piece without its last character (which
/// then starts the next piece, as in " word"), and a run at the end of the
/// text is one piece. `regex-automata` has no look-ahead, so the pattern is
/// three patterns by priority (leftmost-first, as alternatives): the
/// encoding's others with `\s+$` in place of the run at the end, `\s+\s`
/// whose match gives back its last character, and `\s+`. (GitHub's
/// `bpe-openai` pre-tokenizes the same way; its tests check it against
/// tiktoken on random text.)
struct Pretokenizer {
    regex: Regex,
}

/// Pattern ids in [`Pretokenizer::regex`].
const LOOKAHEAD_PATTERN: usize = 1;

impl Pretokenizer {
    fn new(pattern: &str) -> Pretokenizer {
        let regex = Regex::new_many(&[pattern, r"\s+\s", r"\s+"])
            .expect("tiktoken's patterns compile in regex-automata");
        Pretokenizer { regex }
    }

    /// The pieces of `text`, in order.
    fn pieces<'t>(&'t self, text: &'t str) -> impl Iterator<Item = &'t str> + 't {
        let mut at = 0;
        std::iter::from_fn(move || {
            while at < text.len() {
                let input = Input::new(text).range(at..).anchored(Anchored::Yes);
                let Some(m) = self.regex.find(input) else {
                    // Every character matches some alternative, so this is
                    // never reached; tiktoken would skip an unmatched one.
                    at += text[at..].chars().next().map_or(1, char::len_utf8);
                    continue;
                };
                let mut end = m.end();
                if m.pattern().as_usize() == LOOKAHEAD_PATTERN {
                    // `\s+\s` matches at least two characters: giving one
                    // back leaves at least one.
                    end -= text[..end].chars().next_back().map_or(0, char::len_utf8);
                }
                let piece = &text[at..end];
                at = end;
                return Some(piece);
            }
            None
        })
    }
}

/// Token bytes to rank: an open-addressing table of ranks over the
/// vocabulary compiled into the binary. 2.8 MB for o200k's 200k tokens,
/// where a `HashMap<&[u8], u32>` takes 6–13 MB and tiktoken-rs's maps more.
struct Ranks {
    vocab: &'static [u8],
    /// Where each token's bytes start in `vocab` (its length is the byte
    /// before), by rank.
    starts: Vec<u32>,
    /// rank + 1 at the slot its bytes hash to (or the next free one); 0 is
    /// empty. At most half full, so a miss ends after a probe or two.
    slots: Vec<u32>,
}

impl Ranks {
    fn new(vocab: &'static [u8]) -> Ranks {
        let mut starts = Vec::with_capacity(vocab.len() / 7);
        let mut at = 0usize;
        while at < vocab.len() {
            starts.push(at as u32 + 1);
            at += 1 + usize::from(vocab[at]);
        }
        assert_eq!(at, vocab.len(), "a vocabulary file ends with a whole token");
        let size = (starts.len() * 2).next_power_of_two();
        let mut ranks = Ranks {
            vocab,
            starts,
            slots: vec![0; size],
        };
        for rank in 0..ranks.starts.len() {
            let token = ranks.token(rank);
            let mut slot = ranks.first_slot(token);
            while ranks.slots[slot] != 0 {
                slot = (slot + 1) & (size - 1);
            }
            ranks.slots[slot] = rank as u32 + 1;
        }
        ranks
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn token(&self, rank: usize) -> &'static [u8] {
        let start = self.starts[rank] as usize;
        let vocab: &'static [u8] = self.vocab;
        &vocab[start..start + usize::from(vocab[start - 1])]
    }

    fn get(&self, bytes: &[u8]) -> Option<u32> {
        let mut slot = self.first_slot(bytes);
        loop {
            let entry = self.slots[slot];
            if entry == 0 {
                return None;
            }
            if self.token(entry as usize - 1) == bytes {
                return Some(entry - 1);
            }
            slot = (slot + 1) & (self.slots.len() - 1);
        }
    }

    /// A fast hash (FxHash's step over 8-byte words, then a finalizer that
    /// brings the high bits down to the low ones the slot is taken from).
    /// The keys are a fixed vocabulary, so no resistance to flooding is needed.
    fn first_slot(&self, bytes: &[u8]) -> usize {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = bytes.len() as u64;
        let mut chunks = bytes.chunks(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        (h as usize) & (self.slots.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token of both vocabularies, byte for byte and rank for rank,
    /// against tiktoken-rs's (a wrong or missing `.bin` fails here).
    #[test]
    fn vocabularies_are_tiktokens() {
        let encodings = [
            (
                o200k(),
                tiktoken_rs::o200k_base().expect("o200k"),
                199_998u32,
            ),
            (
                cl100k(),
                tiktoken_rs::cl100k_base().expect("cl100k"),
                100_256,
            ),
        ];
        for (bpe, reference, tokens) in encodings {
            assert_eq!(bpe.ranks.len(), tokens as usize);
            // Each rank's bytes find that rank (a token there twice would
            // find its first rank).
            for rank in 0..tokens {
                let bytes = reference
                    ._decode_native_and_split(vec![rank])
                    .next()
                    .expect("one token");
                assert_eq!(bpe.rank(&bytes), Some(rank), "{bytes:?}");
            }
        }
    }

    #[test]
    fn whitespace_before_a_word_leaves_one_space_to_the_word() {
        let pieces: Vec<&str> = o200k().pre.pieces("a   b \n\t c  ").collect();
        // `\s*[\r\n]+` comes first and stops at the line break; the tab is
        // then a run of one before a word, so a piece of its own.
        assert_eq!(pieces, ["a", "  ", " b", " \n", "\t", " c", "  "]);
    }
}
