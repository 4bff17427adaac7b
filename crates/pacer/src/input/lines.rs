use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::error::{InputError, Place};

/// Reads a JSONL file one line at a time, reusing one buffer.
///
/// Line numbers count every line, blank ones included, so they match what an
/// editor shows; blank lines are skipped; a UTF-8 byte order mark on the first
/// line is dropped (Windows tools write one).
pub(crate) struct JsonlLines {
    reader: BufReader<File>,
    buf: Vec<u8>,
    line: u64,
    /// Bytes of the file before the next line to read.
    pos: u64,
    /// Where the text last returned starts in the file.
    last_at: u64,
    path: PathBuf,
    name: String,
}

impl JsonlLines {
    pub(crate) fn open(path: &Path) -> Result<JsonlLines, InputError> {
        let file = File::open(path).map_err(|e| InputError::io(path, e))?;
        Ok(JsonlLines {
            reader: BufReader::with_capacity(256 * 1024, file),
            buf: Vec::with_capacity(4096),
            line: 0,
            pos: 0,
            last_at: 0,
            path: path.to_owned(),
            name: path.display().to_string(),
        })
    }

    /// Opens `path` at byte `offset`, which follows `lines_before` lines.
    pub(crate) fn open_at(
        path: &Path,
        offset: u64,
        lines_before: u64,
    ) -> Result<JsonlLines, InputError> {
        use std::io::{Seek, SeekFrom};
        let mut lines = JsonlLines::open(path)?;
        lines
            .reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| InputError::io(path, e))?;
        lines.line = lines_before;
        lines.pos = offset;
        Ok(lines)
    }

    /// The file's name as the user gave it, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Where the line last returned by [`next_line`](Self::next_line)
    /// starts in the file (after a byte-order mark).
    pub(crate) fn last_offset(&self) -> u64 {
        self.last_at
    }

    /// The next non-blank line and its 1-based number, or `None` at the end.
    pub(crate) fn next_line(&mut self) -> Result<Option<(u64, &str)>, InputError> {
        let start = loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| InputError::io(&self.path, e))?;
            if n == 0 {
                return Ok(None);
            }
            let at = self.pos;
            self.pos += n as u64;
            self.line += 1;
            let start = if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            if !self.buf[start..].iter().all(u8::is_ascii_whitespace) {
                self.last_at = at + start as u64;
                break start;
            }
        };
        let Ok(text) = std::str::from_utf8(&self.buf[start..]) else {
            return Err(InputError::NotUtf8 {
                place: Place::line(&self.name, self.line),
            });
        };
        Ok(Some((self.line, text.trim_end_matches(['\n', '\r']))))
    }
}
