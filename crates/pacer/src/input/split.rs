//! Splitting a long document into chunks that each fit a token limit.
//!
//! A chunk should be something a model can read on its own, so the cut goes
//! at the largest boundary that works: between paragraphs (blank lines) first,
//! then between sentences, then between words; only a single "word" longer
//! than the limit (a URL, a base64 blob, CJK text without spaces) is cut
//! between tokens. Pieces are then packed greedily into chunks.
//!
//! Tokens are counted with the caller's function (the model's tokenizer in
//! pacer). Token counts are not exactly additive (BPE merges across a join),
//! so packing uses the pieces' counts, each taken with its trailing
//! whitespace, which over- rather than under-counts a join; and every chunk is
//! counted once more as a whole before it is accepted. A chunk is therefore
//! never over the limit, except when a single character alone is (a limit of
//! one token and a character that takes two).
//!
//! Chunks are slices of the original text with whitespace trimmed at their
//! edges: joined in order, without their overlaps, they give back the
//! document up to the whitespace at the joins.

use std::ops::Range;

use crate::tokens::count_text;

/// One chunk of a split text, as byte ranges into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    /// The chunk's text, overlap included, whitespace-trimmed.
    pub range: Range<usize>,
    /// Where the chunk's own (not repeated) text starts; equal to
    /// `range.start` when the chunk has no overlap.
    pub body_start: usize,
}

/// Splits `text` into chunks of at most `max_tokens` tokens, as counted by
/// `count`, each starting with about the last `overlap` tokens of the chunk
/// before it. A text within the limit comes back whole, as one chunk; the
/// result is never empty. `overlap` is capped at half the limit, so chunks
/// always make progress.
pub fn split_text(
    text: &str,
    max_tokens: u64,
    overlap: u64,
    count: &dyn Fn(&str) -> u64,
) -> Vec<String> {
    split_spans(text, max_tokens, overlap, count)
        .into_iter()
        .map(|c| text[c.range].to_owned())
        .collect()
}

/// [`split_text`] with `model`'s tokenizer: what pacer does to a document
/// given `--split-tokens`; also the entry point for measuring throughput.
pub fn split_for_model(model: &str, text: &str, max_tokens: u64, overlap: u64) -> Vec<String> {
    split_text(text, max_tokens, overlap, &|s| count_text(model, s))
}

/// [`split_text`], returning byte ranges instead of copies.
pub fn split_spans(
    text: &str,
    max_tokens: u64,
    overlap: u64,
    count: &dyn Fn(&str) -> u64,
) -> Vec<ChunkSpan> {
    let max = max_tokens.max(1);
    let whole = || {
        vec![ChunkSpan {
            range: 0..text.len(),
            body_start: 0,
        }]
    };
    // Counting is the cost. A text far longer than the limit in bytes (16
    // bytes a token is four times the usual) is cut into pieces first, and
    // the whole is counted only if the pieces come near the limit.
    let far_over = text.len() as u64 > max.saturating_mul(16);
    if !far_over && count(text) <= max {
        return whole();
    }
    let overlap = overlap.min(max / 2);
    // Pieces leave room for the overlap, so any piece fits after one.
    let piece_limit = max - overlap;
    let mut pieces = Vec::new();
    collect_pieces(
        text,
        0..text.len(),
        Level::Paragraph,
        piece_limit,
        count,
        &mut pieces,
    );
    let near = pieces.iter().map(|p| p.tokens).sum::<u64>() <= max.saturating_mul(2);
    if far_over && near && count(text) <= max {
        return whole();
    }

    let mut chunks: Vec<ChunkSpan> = Vec::new();
    let mut previous: Option<Range<usize>> = None; // the last chunk's own text
    let mut i = 0;
    while i < pieces.len() {
        let (mut overlap_from, overlap_tokens) = match &previous {
            Some(prev) if overlap > 0 => overlap_start(text, prev.clone(), overlap, count),
            _ => (None, 0),
        };
        let budget = max - overlap_tokens;
        let mut sum = pieces[i].tokens;
        let mut j = i + 1;
        while j < pieces.len() && sum + pieces[j].tokens <= budget {
            sum += pieces[j].tokens;
            j += 1;
        }
        // Check the packed chunk as a whole; give back pieces, then the
        // overlap, until it fits.
        let body = loop {
            let body = pieces[i].range.start..pieces[j - 1].range.end;
            let from = overlap_from.unwrap_or(body.start);
            let range = trim(text, from..body.end);
            if count(&text[range]) <= max {
                break body;
            }
            if j - 1 > i {
                j -= 1;
            } else if overlap_from.is_some() {
                overlap_from = None;
            } else {
                break body; // one piece over the limit: a single character is
            }
        };
        let body_range = trim(text, body.clone());
        let range = trim(text, overlap_from.unwrap_or(body.start)..body.end);
        if !body_range.is_empty() {
            chunks.push(ChunkSpan {
                body_start: body_range.start,
                range,
            });
        }
        previous = Some(body);
        i = j;
    }
    if chunks.is_empty() {
        // Only whitespace: the text is its own (trivially small) chunk.
        chunks.push(ChunkSpan {
            range: 0..text.len(),
            body_start: 0,
        });
    }
    chunks
}

/// A stretch of text no longer than the piece limit, with its token count.
struct Piece {
    range: Range<usize>,
    tokens: u64,
}

#[derive(Clone, Copy)]
enum Level {
    Paragraph,
    Sentence,
    Word,
}

/// Cuts `span` at `level`'s boundaries; segments over `limit` are cut at the next finer level.
fn collect_pieces(
    text: &str,
    span: Range<usize>,
    level: Level,
    limit: u64,
    count: &dyn Fn(&str) -> u64,
    out: &mut Vec<Piece>,
) {
    let segments = match level {
        Level::Paragraph => paragraphs(text, span),
        Level::Sentence => sentences(text, span),
        Level::Word => words(text, span),
    };
    for seg in segments {
        let tokens = count(&text[seg.clone()]);
        if tokens <= limit {
            out.push(Piece { range: seg, tokens });
            continue;
        }
        match level {
            Level::Paragraph => collect_pieces(text, seg, Level::Sentence, limit, count, out),
            Level::Sentence => collect_pieces(text, seg, Level::Word, limit, count, out),
            Level::Word => split_by_tokens(text, seg, limit, count, out),
        }
    }
}

/// Paragraphs: each segment ends after a whitespace run holding a blank line.
fn paragraphs(text: &str, span: Range<usize>) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = span.start;
    let mut has_text = false;
    let mut i = span.start;
    while i < span.end {
        if bytes[i].is_ascii_whitespace() {
            let mut newlines = 0;
            while i < span.end && bytes[i].is_ascii_whitespace() {
                newlines += usize::from(bytes[i] == b'\n');
                i += 1;
            }
            if newlines >= 2 && has_text && i < span.end {
                out.push(start..i);
                start = i;
                has_text = false;
            }
        } else {
            has_text = true;
            i += 1;
        }
    }
    if start < span.end {
        out.push(start..span.end);
    }
    out
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '…')
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '”' | '’' | '»' | '」' | '』' | '）'
    )
}

/// Sentences: after `.`, `!`, `?` (and closing quotes) followed by
/// whitespace; after CJK full stops even without whitespace.
fn sentences(text: &str, span: Range<usize>) -> Vec<Range<usize>> {
    let s = &text[span.clone()];
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        i += c.len_utf8();
        if !is_terminator(c) {
            continue;
        }
        let mut wide = c >= '\u{3000}';
        while let Some(d) = s[i..]
            .chars()
            .next()
            .filter(|&d| is_terminator(d) || is_closer(d))
        {
            wide |= is_terminator(d) && d >= '\u{3000}';
            i += d.len_utf8();
        }
        let before_space = i;
        while let Some(d) = s[i..].chars().next().filter(|d| d.is_whitespace()) {
            i += d.len_utf8();
        }
        if i < s.len() && (i > before_space || wide) {
            out.push(span.start + start..span.start + i);
            start = i;
        }
    }
    if start < s.len() {
        out.push(span.start + start..span.end);
    }
    out
}

/// Words: each non-whitespace run with the whitespace after it.
fn words(text: &str, span: Range<usize>) -> Vec<Range<usize>> {
    let s = &text[span.clone()];
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in s.char_indices() {
        let space = c.is_whitespace();
        if in_space && !space && s[start..i].chars().any(|c| !c.is_whitespace()) {
            out.push(span.start + start..span.start + i);
            start = i;
        }
        in_space = space;
    }
    if start < s.len() {
        out.push(span.start + start..span.end);
    }
    out
}

/// Cuts a word longer than `limit` into the longest prefixes that fit, found
/// by binary search over character boundaries.
fn split_by_tokens(
    text: &str,
    span: Range<usize>,
    limit: u64,
    count: &dyn Fn(&str) -> u64,
    out: &mut Vec<Piece>,
) {
    // No token is this long, so a window of `limit * 64` bytes holds more
    // than `limit` tokens; searching it keeps each count call short.
    let window = usize::try_from(limit.saturating_mul(64))
        .unwrap_or(usize::MAX)
        .max(64);
    let mut start = span.start;
    while start < span.end {
        let mut hi = floor_boundary(text, start.saturating_add(window).min(span.end));
        if hi <= start {
            hi = next_boundary(text, start);
        }
        let tokens_hi = count(&text[start..hi]);
        let end = if tokens_hi <= limit {
            hi
        } else {
            // Invariant: `lo` fits (or is one character), `hi` does not.
            let mut lo = next_boundary(text, start);
            while lo < hi {
                let mid = floor_boundary(text, lo + (hi - lo) / 2);
                let mid = if mid <= lo {
                    next_boundary(text, lo)
                } else {
                    mid
                };
                if mid >= hi {
                    break;
                }
                if count(&text[start..mid]) <= limit {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        out.push(Piece {
            range: start..end,
            tokens: count(&text[start..end]),
        });
        start = end;
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn next_boundary(text: &str, i: usize) -> usize {
    i + text[i..].chars().next().map_or(0, char::len_utf8)
}

/// Where the overlap taken from the end of `prev` starts: whole words, as
/// many as fit in `overlap` tokens; and how many tokens that is.
fn overlap_start(
    text: &str,
    prev: Range<usize>,
    overlap: u64,
    count: &dyn Fn(&str) -> u64,
) -> (Option<usize>, u64) {
    let mut from = None;
    let mut tokens = 0;
    let mut end = prev.end;
    while end > prev.start {
        let s = text[prev.start..end].trim_end();
        if s.is_empty() {
            break;
        }
        let word_start = prev.start
            + s.rfind(char::is_whitespace)
                .map_or(0, |p| p + s[p..].chars().next().map_or(1, char::len_utf8));
        let t = count(&text[word_start..end]);
        if tokens + t > overlap {
            break;
        }
        tokens += t;
        from = Some(word_start);
        end = word_start;
    }
    (from, tokens)
}

/// `range` without whitespace at either end.
fn trim(text: &str, range: Range<usize>) -> Range<usize> {
    let s = &text[range.clone()];
    let start = range.start + (s.len() - s.trim_start().len());
    let end = range.start + s.trim_end().len();
    start..end.max(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in tokenizer: one token a whitespace-separated word. Exactly
    /// additive, so expected chunks can be worked out by hand.
    fn words_count(s: &str) -> u64 {
        s.split_whitespace().count() as u64
    }

    /// One token per 4 bytes of each word, so a long word has many tokens.
    fn bytes_count(s: &str) -> u64 {
        s.split_whitespace()
            .map(|w| (w.len() as u64).div_ceil(4))
            .sum()
    }

    fn no_space(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// Every chunk within the limit; bodies, joined, give back the text.
    fn check(text: &str, max: u64, overlap: u64, count: &dyn Fn(&str) -> u64) -> Vec<ChunkSpan> {
        let spans = split_spans(text, max, overlap, count);
        assert!(!spans.is_empty());
        for c in &spans {
            let chunk = &text[c.range.clone()];
            assert!(
                count(chunk) <= max,
                "chunk of {} tokens over {max}: {chunk:?}",
                count(chunk)
            );
            assert!(c.range.start <= c.body_start && c.body_start <= c.range.end);
        }
        let joined: String = spans
            .iter()
            .map(|c| &text[c.body_start..c.range.end])
            .collect();
        assert_eq!(no_space(&joined), no_space(text));
        spans
    }

    #[test]
    fn a_short_text_comes_back_whole() {
        let text = "  One short paragraph.\n";
        assert_eq!(
            split_text(text, 100, 10, &words_count),
            vec![text.to_owned()]
        );
        assert_eq!(split_text("", 5, 0, &words_count), vec![String::new()]);
    }

    #[test]
    fn a_text_long_in_bytes_but_within_the_limit_is_not_split() {
        // 20 words of 100 bytes: 2,000 bytes, but 20 tokens by the stand-in.
        let text = vec!["y".repeat(100); 20].join(" ");
        assert_eq!(split_text(&text, 20, 0, &words_count), vec![text.clone()]);
        assert_eq!(split_text(&text, 19, 0, &words_count).len(), 2);
    }

    #[test]
    fn paragraphs_are_the_first_boundary() {
        let text = "one two three.\n\nfour five six.\n\nseven eight nine.";
        let chunks = split_text(text, 6, 0, &words_count);
        assert_eq!(
            chunks,
            vec!["one two three.\n\nfour five six.", "seven eight nine."]
        );
        check(text, 6, 0, &words_count);
        // Blank lines with spaces in them still separate paragraphs.
        let text = "a b c\n  \t\nd e f";
        assert_eq!(split_text(text, 4, 0, &words_count), vec!["a b c", "d e f"]);
    }

    #[test]
    fn long_paragraphs_split_at_sentences() {
        let text = "First one here. Second one here! Third one here? \"Fourth,\" he said. Fifth.";
        let chunks = split_text(text, 6, 0, &words_count);
        assert_eq!(
            chunks,
            vec![
                "First one here. Second one here!",
                "Third one here? \"Fourth,\" he said.",
                "Fifth."
            ]
        );
        check(text, 6, 0, &words_count);
        // Decimals are not sentence ends.
        assert_eq!(
            sentences("pi is 3.14 today. ok", 0..20),
            vec![0..18, 18..20]
        );
        // CJK full stops are, without a space.
        let cjk = "今日は晴れ。明日は雨。";
        assert_eq!(sentences(cjk, 0..cjk.len()).len(), 2);
    }

    #[test]
    fn long_sentences_split_at_words_and_long_words_at_tokens() {
        let text = "alpha beta gamma delta epsilon zeta eta theta";
        assert_eq!(
            split_text(text, 3, 0, &words_count),
            vec!["alpha beta gamma", "delta epsilon zeta", "eta theta"]
        );
        let word = "x".repeat(40); // 10 tokens by the stand-in
        let text = format!("short {word} end");
        let spans = check(&text, 4, 0, &bytes_count);
        assert_eq!(spans.len(), 4);
        for c in &spans {
            assert!(text[c.range.clone()].len() <= 16);
        }
    }

    #[test]
    fn overlap_repeats_the_end_of_the_previous_chunk() {
        let text: String = (1..=60)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let spans = check(&text, 10, 3, &words_count);
        assert!(spans.len() > 6);
        for pair in spans.windows(2) {
            let prev = &text[pair[0].body_start..pair[0].range.end];
            let next = &text[pair[1].range.clone()];
            let repeated = &text[pair[1].range.start..pair[1].body_start];
            let repeated = repeated.trim();
            assert_eq!(words_count(repeated), 3, "overlap {repeated:?}");
            assert!(
                prev.ends_with(repeated),
                "{prev:?} does not end with {repeated:?}"
            );
            assert!(next.starts_with(repeated));
        }
        // The first chunk has nothing to repeat.
        assert_eq!(spans[0].range.start, spans[0].body_start);
    }

    #[test]
    fn overlap_is_capped_at_half_the_limit() {
        let text: String = (1..=40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let spans = check(&text, 4, 100, &words_count);
        assert!(spans.len() > 10, "chunks must make progress");
    }

    #[test]
    fn a_non_additive_tokenizer_still_never_overflows() {
        // Joins cost extra: a tokenizer that charges per whitespace run too.
        let count = |s: &str| words_count(s) + s.matches(char::is_whitespace).count() as u64 / 2;
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(30);
        check(&text, 12, 2, &count);
        check(&text, 7, 0, &count);
    }

    #[test]
    fn real_tokenizer_respects_the_limit_on_mixed_text() {
        let model = "gpt-4o-mini";
        let count = |s: &str| count_text(model, s);
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!(
                "Paragraph {i}. Tài liệu OCR số {i} có nhiều câu. 这是第{i}段。Über straße café naïve! {}\n\n",
                "token".repeat(i % 7 * 20)
            ));
        }
        for (max, overlap) in [(50, 0), (50, 10), (200, 40), (13, 3)] {
            let spans = check(&text, max, overlap, &count);
            assert!(spans.len() > 1);
        }
        assert_eq!(
            split_for_model(model, &text, 50, 10),
            split_text(&text, 50, 10, &count)
        );
    }
}
