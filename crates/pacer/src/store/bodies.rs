//! Bodies kept in the input file: a request's body that is the input's own
//! bytes is stored as where it is (`bodies.at`, `len`, `hash`), and read back
//! from the input when the request is about to be sent.
//!
//! Why: a body is most of a request's bytes. Copied into the state, every
//! body was written twice (SQLite's journal or WAL, then the database) and
//! read back through SQLite's pages, for bytes the input file already holds
//! and that every run checks are unchanged (the job's fingerprint). Read
//! from the input they cost one positioned read a page of work. The hash
//! catches an input changed while a run is going.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// Where a body is in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyRef {
    pub at: u64,
    pub len: u64,
    pub hash: i64,
}

/// A page's reads of the input are one read when the bodies lie together
/// (the usual case: pending work in input order), unless the span holds
/// much more than the bodies.
const MAX_SPAN_SLACK: u64 = 1 << 20;
/// The most a body can be (a Batch line is far below this).
const MAX_BODY: u64 = 1 << 30;

/// The hash kept for a body: the first 8 bytes of its blake3.
pub(crate) fn body_hash(body: &[u8]) -> i64 {
    let hash = blake3::hash(body);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

/// The job's input, opened on first use.
#[derive(Debug)]
pub(crate) struct InputBodies {
    path: PathBuf,
    file: File,
}

impl InputBodies {
    pub fn open(path: &Path) -> Result<InputBodies, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Ok(InputBodies {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The bodies at `refs`, in their order; `custom_id(i)` names the
    /// request of `refs[i]` in an error.
    pub fn read(
        &self,
        refs: &[BodyRef],
        custom_id: impl Fn(usize) -> String,
    ) -> Result<Vec<String>, StoreError> {
        let Some(start) = refs.iter().map(|r| r.at).min() else {
            return Ok(Vec::new());
        };
        let end = refs
            .iter()
            .map(|r| r.at.saturating_add(r.len.min(MAX_BODY)))
            .max()
            .unwrap_or(start);
        let wanted: u64 = refs.iter().map(|r| r.len.min(MAX_BODY)).sum();
        let span = end - start;
        if span <= wanted.saturating_mul(2).saturating_add(MAX_SPAN_SLACK) {
            let mut buf = vec![0u8; span as usize];
            self.read_at(&mut buf, start, &custom_id, 0)?;
            refs.iter()
                .enumerate()
                .map(|(i, r)| {
                    let from = (r.at - start) as usize;
                    self.check(&buf[from..from + r.len.min(MAX_BODY) as usize], r, || {
                        custom_id(i)
                    })
                })
                .collect()
        } else {
            refs.iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut buf = vec![0u8; r.len.min(MAX_BODY) as usize];
                    self.read_at(&mut buf, r.at, &custom_id, i)?;
                    self.check(&buf, r, || custom_id(i))
                })
                .collect()
        }
    }

    fn read_at(
        &self,
        buf: &mut [u8],
        at: u64,
        custom_id: &impl Fn(usize) -> String,
        i: usize,
    ) -> Result<(), StoreError> {
        self.file.read_exact_at(buf, at).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.changed(custom_id(i))
            } else {
                StoreError::Io {
                    path: self.path.clone(),
                    source: e,
                }
            }
        })
    }

    fn check(
        &self,
        bytes: &[u8],
        r: &BodyRef,
        custom_id: impl Fn() -> String,
    ) -> Result<String, StoreError> {
        if body_hash(bytes) != r.hash {
            return Err(self.changed(custom_id()));
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| self.changed(custom_id()))
    }

    fn changed(&self, custom_id: String) -> StoreError {
        StoreError::InputChangedDuringRun {
            input: self.path.clone(),
            custom_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn at(text: &str, body: &str) -> BodyRef {
        BodyRef {
            at: text.find(body).unwrap() as u64,
            len: body.len() as u64,
            hash: body_hash(body.as_bytes()),
        }
    }

    #[test]
    fn bodies_are_read_together_or_apart_and_checked() {
        let text = "{\"body\":{\"a\":1}}\n{\"body\":{\"b\":22}}\n";
        let (_dir, path) = input(text);
        let bodies = InputBodies::open(&path).unwrap();
        let refs = [at(text, "{\"b\":22}"), at(text, "{\"a\":1}")];
        let got = bodies.read(&refs, |i| format!("r{i}")).unwrap();
        assert_eq!(got, ["{\"b\":22}", "{\"a\":1}"]);
        // Far apart: each read on its own.
        let far = format!("{text}{}{{\"c\":3}}\n", " ".repeat(3 << 20));
        let (_dir, path) = input(&far);
        let bodies = InputBodies::open(&path).unwrap();
        let refs = [at(&far, "{\"a\":1}"), at(&far, "{\"c\":3}")];
        assert_eq!(
            bodies.read(&refs, |i| format!("r{i}")).unwrap(),
            ["{\"a\":1}", "{\"c\":3}"]
        );
    }

    #[test]
    fn an_input_changed_under_a_run_is_refused_by_name() {
        let text = "{\"body\":{\"a\":1}}\n";
        let (_dir, path) = input(text);
        let refs = [at(text, "{\"a\":1}")];
        std::fs::write(&path, "{\"body\":{\"a\":2}}\n").unwrap();
        let bodies = InputBodies::open(&path).unwrap();
        let e = bodies.read(&refs, |_| "req-7".to_owned()).unwrap_err();
        assert!(matches!(e, StoreError::InputChangedDuringRun { .. }), "{e}");
        assert!(e.to_string().contains("req-7"), "{e}");
        // Cut short: the same sentence, not an I/O error.
        std::fs::write(&path, "{\"bo").unwrap();
        let bodies = InputBodies::open(&path).unwrap();
        let e = bodies.read(&refs, |_| "req-7".to_owned()).unwrap_err();
        assert!(matches!(e, StoreError::InputChangedDuringRun { .. }), "{e}");
    }
}
