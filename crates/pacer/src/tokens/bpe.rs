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
//! with the look-ahead emulated, ASCII pieces are cut by hand-written code
//! that follows each pattern's alternatives (the regex only for pieces that
//! touch other characters; see [`Pretokenizer`]), and a vocabulary is its
//! token bytes (read from the binary) plus a hash table: ~5 MB for o200k.
//!
//! Counts equal tiktoken's: the tests compare every token of both
//! vocabularies with tiktoken-rs, the fast path's pieces with the regex's,
//! texts of every kind with tiktoken-rs, and Python tiktoken's own figures.

use std::cell::RefCell;
use std::sync::OnceLock;

use regex_automata::meta::{Cache, Regex};
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
    BPE.get_or_init(|| {
        Bpe::new(
            O200K_VOCAB,
            Pretokenizer::new(O200K_PATTERN, o200k_piece, 0),
        )
    })
}

/// The cl100k encoding, loaded on first use.
pub(crate) fn cl100k() -> &'static Bpe {
    static BPE: OnceLock<Bpe> = OnceLock::new();
    BPE.get_or_init(|| {
        Bpe::new(
            CL100K_VOCAB,
            Pretokenizer::new(CL100K_PATTERN, cl100k_piece, 1),
        )
    })
}

impl Bpe {
    fn new(vocab: &'static [u8], pre: Pretokenizer) -> Bpe {
        Bpe {
            pre,
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
        // Short pieces that are not a token, without the merge's scratch
        // list: each byte is a token, and at 3 bytes one merge (if any pair
        // is a token) leaves two parts whose join is the whole piece.
        match piece.len() {
            2 => return 2,
            3 => {
                let merges =
                    self.ranks.get(&piece[..2]).is_some() || self.ranks.get(&piece[1..]).is_some();
                return if merges { 2 } else { 3 };
            }
            _ => {}
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
///
/// Most pieces are ASCII, and one regex search per piece was more than half
/// of counting's CPU, so each piece is first cut by hand-written byte logic
/// that follows the pattern's alternatives in order ([`o200k_piece`],
/// [`cl100k_piece`]). It gives up on a piece as soon as a byte it needs to
/// decide it is not ASCII (a letter class, digit class or `\s` might take
/// it), and that one piece is then found by the regex.
struct Pretokenizer {
    regex: Regex,
    /// The hand-written equivalent of the pattern on ASCII.
    ascii_piece: fn(&[u8], usize) -> Option<usize>,
    /// Which of the thread's [`CACHES`] the regex searches with.
    cache: usize,
}

/// Pattern ids in [`Pretokenizer::regex`].
const LOOKAHEAD_PATTERN: usize = 1;

thread_local! {
    /// Each thread's search cache for each encoding's regex: `Regex::find`
    /// takes one from a pool and puts it back on every call, which showed
    /// in profiles (`Pool::get_slow`) on threads other than the first.
    static CACHES: RefCell<[Option<Cache>; 2]> = const { RefCell::new([None, None]) };
}

impl Pretokenizer {
    fn new(
        pattern: &str,
        ascii_piece: fn(&[u8], usize) -> Option<usize>,
        cache: usize,
    ) -> Pretokenizer {
        let regex = Regex::new_many(&[pattern, r"\s+\s", r"\s+"])
            .expect("tiktoken's patterns compile in regex-automata");
        Pretokenizer {
            regex,
            ascii_piece,
            cache,
        }
    }

    /// The pieces of `text`, in order.
    fn pieces<'t>(&'t self, text: &'t str) -> impl Iterator<Item = &'t str> + 't {
        self.pieces_by(text, true)
    }

    /// The pieces of `text`, the fast path tried first if `fast`.
    fn pieces_by<'t>(&'t self, text: &'t str, fast: bool) -> impl Iterator<Item = &'t str> + 't {
        let mut at = 0;
        std::iter::from_fn(move || {
            while at < text.len() {
                let ascii = if fast {
                    (self.ascii_piece)(text.as_bytes(), at)
                } else {
                    None
                };
                let end = match ascii {
                    Some(end) => end,
                    None => match self.regex_piece(text, at) {
                        Some(end) => end,
                        None => {
                            // Every character matches some alternative, so
                            // this is never reached; tiktoken would skip an
                            // unmatched one.
                            at += text[at..].chars().next().map_or(1, char::len_utf8);
                            continue;
                        }
                    },
                };
                let piece = &text[at..end];
                at = end;
                return Some(piece);
            }
            None
        })
    }

    /// The end of the piece at `at`, by the regex.
    fn regex_piece(&self, text: &str, at: usize) -> Option<usize> {
        let input = Input::new(text).range(at..).anchored(Anchored::Yes);
        let m = CACHES.with(|caches| {
            let mut caches = caches.borrow_mut();
            let cache = caches[self.cache].get_or_insert_with(|| self.regex.create_cache());
            self.regex.search_with(cache, &input)
        })?;
        let mut end = m.end();
        if m.pattern().as_usize() == LOOKAHEAD_PATTERN {
            // `\s+\s` matches at least two characters: giving one back
            // leaves at least one.
            end -= text[..end].chars().next_back().map_or(0, char::len_utf8);
        }
        Some(end)
    }
}

// The ASCII fast path. On ASCII, \p{L} is [A-Za-z] (\p{Lu} [A-Z], \p{Ll}
// [a-z]; Lt, Lm, Lo and M have no ASCII members), \p{N} is [0-9] and \s is
// [\t\n\x0B\x0C\r ] (Unicode's White_Space: not \x1C-\x1F);
// `ascii_classes_are_the_regexs` checks each against the regex.

/// A set of ASCII bytes.
type ByteClass = fn(u8) -> bool;

fn is_letter(b: u8) -> bool {
    b.is_ascii_alphabetic()
}

fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

/// ASCII in `[^\s\p{L}\p{N}]`.
fn is_punct(b: u8) -> bool {
    b.is_ascii() && !is_space(b) && !b.is_ascii_alphanumeric()
}

/// ASCII in `[^\r\n\p{L}\p{N}]`, what may come before a word.
fn is_word_prefix(b: u8) -> bool {
    b.is_ascii() && b != b'\r' && b != b'\n' && !b.is_ascii_alphanumeric()
}

/// The end of the run from `i` of bytes in `class` (an ASCII class whose
/// Unicode original may hold other characters), or `None` if the run stops
/// at a non-ASCII byte, which the original might have taken.
fn run(bytes: &[u8], mut i: usize, class: ByteClass) -> Option<usize> {
    while i < bytes.len() && class(bytes[i]) {
        i += 1;
    }
    match bytes.get(i) {
        Some(b) if !b.is_ascii() => None,
        _ => Some(i),
    }
}

/// The end of the run from `i` of bytes in `class`, a class with no
/// non-ASCII characters (such as `[\r\n/]`), so any other byte ends it.
fn run_exact(bytes: &[u8], mut i: usize, class: ByteClass) -> usize {
    while i < bytes.len() && class(bytes[i]) {
        i += 1;
    }
    i
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `i`: where it ends (`i` if absent),
/// or `None` if a byte it depends on is not ASCII (`(?i:s)` also matches
/// U+017F "ſ").
fn contraction(bytes: &[u8], i: usize) -> Option<usize> {
    if bytes.get(i) != Some(&b'\'') {
        return Some(i);
    }
    let Some(&c) = bytes.get(i + 1) else {
        return Some(i);
    };
    let third = match c.to_ascii_lowercase() {
        b's' | b't' | b'm' | b'd' => return Some(i + 2),
        b'r' | b'v' => b'e',
        b'l' => b'l',
        _ if !c.is_ascii() => return None,
        _ => return Some(i),
    };
    match bytes.get(i + 2) {
        Some(&b) if b.to_ascii_lowercase() == third => Some(i + 3),
        Some(&b) if !b.is_ascii() => None,
        _ => Some(i),
    }
}

/// `\p{N}{1,3}` at `at`, which holds an ASCII digit.
fn digits(bytes: &[u8], at: usize) -> Option<usize> {
    let most = bytes.len().min(at + 3);
    let mut i = at;
    while i < most && bytes[i].is_ascii_digit() {
        i += 1;
    }
    match bytes.get(i) {
        // Fewer than three, and the next might be a digit of another script.
        Some(b) if i < at + 3 && !b.is_ascii() => None,
        _ => Some(i),
    }
}

/// The whitespace alternatives at `at`, which holds ASCII whitespace:
/// `\s*[\r\n]+`, `\s+$`, then the look-ahead's `\s+\s` (giving back the
/// last) and `\s+`.
fn whitespace(bytes: &[u8], at: usize) -> Option<usize> {
    let end = run(bytes, at, is_space)?;
    if end == at {
        return None; // not whitespace after all: let the regex decide
    }
    // `\s*` backtracks to the run's last line break, `[\r\n]+` takes it.
    if let Some(last) = bytes[at..end]
        .iter()
        .rposition(|&b| b == b'\r' || b == b'\n')
    {
        return Some(at + last + 1);
    }
    if end == bytes.len() || end - at == 1 {
        Some(end)
    } else {
        Some(end - 1)
    }
}

/// The end of o200k's piece at `at` (`at` < `bytes.len()`), or `None` if
/// that depends on a non-ASCII byte. The pattern's alternatives, in order:
///
/// 1. `[^\r\n\p{L}\p{N}]?[\p{Lu}…]*[\p{Ll}…]+(?i:'s|…)?` and
/// 2. `[^\r\n\p{L}\p{N}]?[\p{Lu}…]+[\p{Ll}…]*(?i:'s|…)?`: on ASCII together
///    an optional prefix, capitals then lower case (at least one letter in
///    all: 1 when there is a lower-case one, else 2), then a contraction.
///    Without letters after it, dropping the prefix cannot help: it is not
///    a letter.
/// 3. `\p{N}{1,3}`
/// 4. ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
/// 5. the whitespace ones ([`whitespace`]).
fn o200k_piece(bytes: &[u8], at: usize) -> Option<usize> {
    let first = bytes[at];
    if !first.is_ascii() {
        return None;
    }
    let start = at + usize::from(is_word_prefix(first));
    let capitals = run(bytes, start, |b| b.is_ascii_uppercase())?;
    let word = run(bytes, capitals, |b| b.is_ascii_lowercase())?;
    if word > start {
        return contraction(bytes, word);
    }
    if first.is_ascii_digit() {
        return digits(bytes, at);
    }
    let start = at + usize::from(first == b' ');
    let punct = run(bytes, start, is_punct)?;
    if punct > start {
        return Some(run_exact(bytes, punct, |b| {
            matches!(b, b'\r' | b'\n' | b'/')
        }));
    }
    whitespace(bytes, at)
}

/// The end of cl100k's piece at `at`, as [`o200k_piece`]. Alternatives:
///
/// 1. `(?i:'s|'t|'re|'ve|'m|'ll|'d)`
/// 2. `[^\r\n\p{L}\p{N}]?\p{L}+`
/// 3. `\p{N}{1,3}`
/// 4. ` ?[^\s\p{L}\p{N}]+[\r\n]*`
/// 5. the whitespace ones.
fn cl100k_piece(bytes: &[u8], at: usize) -> Option<usize> {
    let first = bytes[at];
    if !first.is_ascii() {
        return None;
    }
    let end = contraction(bytes, at)?;
    if end > at {
        return Some(end);
    }
    let start = at + usize::from(is_word_prefix(first));
    let word = run(bytes, start, is_letter)?;
    if word > start {
        return Some(word);
    }
    if first.is_ascii_digit() {
        return digits(bytes, at);
    }
    let start = at + usize::from(first == b' ');
    let punct = run(bytes, start, is_punct)?;
    if punct > start {
        return Some(run_exact(bytes, punct, |b| matches!(b, b'\r' | b'\n')));
    }
    whitespace(bytes, at)
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
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            h = (h.rotate_left(5) ^ word).wrapping_mul(K);
        }
        // The last few bytes as a zero-padded little-endian word, built
        // byte by byte: copying a slice of unknown length called memcpy.
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let word = rest
                .iter()
                .rev()
                .fold(0u64, |word, &b| (word << 8) | u64::from(b));
            h = (h.rotate_left(5) ^ word).wrapping_mul(K);
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

    /// The ASCII members of each class the fast path hard-codes, as the
    /// regex (Unicode) sees them: \x0B is whitespace, \x1C-\x1F are not.
    #[test]
    fn ascii_classes_are_the_regexs() {
        let classes: [(&str, ByteClass); 6] = [
            (r"\s", is_space),
            (r"\p{L}", is_letter),
            (r"\p{Lu}", |b| b.is_ascii_uppercase()),
            (r"\p{Ll}", |b| b.is_ascii_lowercase()),
            (r"\p{N}", |b| b.is_ascii_digit()),
            (r"[\p{Lt}\p{Lm}\p{Lo}\p{M}]", |_| false),
        ];
        for (class, ours) in classes {
            let regex = Regex::new(&format!(r"\A{class}\z")).expect("a class");
            for b in 0u8..0x80 {
                let text = char::from(b).to_string();
                assert_eq!(regex.is_match(&text), ours(b), "{class} on {b:#04x}");
            }
        }
    }

    /// Pieces of ASCII that are cut differently by each alternative.
    const ASCII_PARTS: &[&str] = &[
        " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\x0B", "\x0C", " \r\n",
        "\x1C", "\x1F", "\x00", "\x7F", "a", "z", "The", "hello", "WORLD", "McDonald", "ABCdef",
        "iPhone", "x", "Q", "'s", "'S", "'t", "'T", "'re", "'RE", "'rE", "'ve", "'VE", "'m", "'M",
        "'ll", "'LL", "'lL", "'d", "'D", "'", "''", "'r", "'l", "'v", "'x", "DON'T", "it's",
        "we'd", "they'll", "I'M", "You'Re", "0", "1", "12", "123", "1234", "12345", "123456",
        "1234567", ".", "...", ",", "!", "?", "/", "//", "-", "_", "(", ")", "{", "}", "<", ">",
        "=", "#", "\"", "`", "^", "~", "\\", "|", "@", "$", "%", "&", "*", "+", ";", ":", "[", "]",
        "!\r\n", "./", ".\n/", "?/\r\n",
    ];
    /// Characters around which the fast path must hand over to the regex:
    /// letters, marks, digits, spaces and punctuation outside ASCII, and
    /// "ſ" and the Kelvin sign, which `(?i:s)` and `(?i:k)` match.
    const OTHER_PARTS: &[&str] = &[
        "é",
        "É",
        "\u{a0}",
        "\u{2028}",
        "\u{85}",
        "\u{3000}",
        "東京",
        "の",
        "😀",
        "👍🏽",
        "\u{301}",
        "ſ",
        "\u{212a}",
        "ǅ",
        "ʰ",
        "١٢",
        "²",
        "\u{2160}",
        "’",
        "。",
        "«",
        "—",
        "Привет",
        "\u{200d}",
    ];

    /// Seeded random texts of `parts`; a part of `others` in `1 / other_odds`.
    fn texts(seed: u64, count: usize, other_odds: u32) -> Vec<String> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let parts = rng.gen_range(0..60);
                (0..parts)
                    .map(|_| {
                        if other_odds > 0 && rng.gen_range(0..other_odds) == 0 {
                            OTHER_PARTS[rng.gen_range(0..OTHER_PARTS.len())]
                        } else {
                            ASCII_PARTS[rng.gen_range(0..ASCII_PARTS.len())]
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn encodings() -> [(&'static str, &'static Bpe); 2] {
        [("o200k", o200k()), ("cl100k", cl100k())]
    }

    /// On ASCII the fast path cuts every piece itself, and where the regex
    /// does.
    #[test]
    fn ascii_fast_path_cuts_as_the_regex() {
        for (name, bpe) in encodings() {
            for text in texts(11, 5000, 0) {
                let mut at = 0;
                for piece in bpe.pre.pieces_by(&text, false) {
                    let fast = (bpe.pre.ascii_piece)(text.as_bytes(), at);
                    assert_eq!(
                        fast.map(|end| &text[at..end]),
                        Some(piece),
                        "{name}: {text:?} at {at}"
                    );
                    at += piece.len();
                }
            }
        }
    }

    /// With non-ASCII characters about, the fast path hands those pieces to
    /// the regex and the pieces are still the regex's; the counts of both
    /// kinds of text are tiktoken-rs's.
    #[test]
    fn fast_path_hands_non_ascii_to_the_regex_and_counts_as_tiktoken() {
        let ascii = texts(12, 2000, 0);
        let mixed = texts(13, 4000, 5);
        let o200k_reference = tiktoken_rs::o200k_base().expect("o200k");
        let cl100k_reference = tiktoken_rs::cl100k_base().expect("cl100k");
        let references = [&o200k_reference, &cl100k_reference];
        let mut wrong = Vec::new();
        for ((name, bpe), reference) in encodings().into_iter().zip(references) {
            for text in &mixed {
                let fast: Vec<&str> = bpe.pre.pieces(text).collect();
                let regex: Vec<&str> = bpe.pre.pieces_by(text, false).collect();
                assert_eq!(fast, regex, "{name}: {text:?}");
            }
            for text in ascii.iter().chain(&mixed) {
                let expected = reference.encode_ordinary(text).len();
                let got = bpe.count(text);
                if got != expected {
                    wrong.push(format!("{name}: {text:?}: {got}, tiktoken {expected}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn whitespace_before_a_word_leaves_one_space_to_the_word() {
        let pieces: Vec<&str> = o200k().pre.pieces("a   b \n\t c  ").collect();
        // `\s*[\r\n]+` comes first and stops at the line break; the tab is
        // then a run of one before a word, so a piece of its own.
        assert_eq!(pieces, ["a", "  ", " b", " \n", "\t", " c", "  "]);
    }
}
