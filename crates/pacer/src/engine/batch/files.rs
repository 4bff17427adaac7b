//! A batch's input, written from the state to a file beside it and streamed
//! to the provider from there (up to 200 MB never sits in memory). The file
//! holds prompts: it is created owner-only and removed once the provider
//! has it; after a crash it is written again from the state.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::lines::line_id;
use crate::store::{BatchApi, BatchRow, JobStore, StoreError};

/// Where batch `id`'s input is written: `STATE.batch-ID.jsonl` (OpenAI's
/// JSONL) or `STATE.batch-ID.json` (Anthropic's JSON body).
pub(crate) fn input_path(state: &Path, api: BatchApi, id: i64) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(match api {
        BatchApi::OpenAi => format!(".batch-{id}.jsonl"),
        BatchApi::Anthropic => format!(".batch-{id}.json"),
    });
    PathBuf::from(s)
}

/// A body fit to be embedded in one line: the stored text when it is on
/// one line already (every body pacer stores is), else compacted.
fn one_line(body: &str) -> std::borrow::Cow<'_, str> {
    if !body.contains(['\n', '\r']) {
        return body.into();
    }
    match serde_json::from_str::<Value>(body) {
        Ok(v) => v.to_string().into(),
        Err(_) => body.replace(['\n', '\r'], " ").into(),
    }
}

/// Writes batch `row`'s input to `path` from the state: OpenAI's JSONL
/// (`{"custom_id","method","url","body"}` a line) or Anthropic's
/// `{"requests":[{"custom_id","params"}]}`, requests in idx order (the
/// order OpenAI's error lines number). Returns the requests written.
pub(crate) fn write_input(
    store: &JobStore,
    row: &BatchRow,
    path: &Path,
) -> Result<u64, StoreError> {
    let io = |e| StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let endpoint = serde_json::to_string(&row.endpoint).unwrap_or_default();
    let mut first = true;
    if row.api == BatchApi::Anthropic {
        out.write_all(b"{\"requests\":[").map_err(io)?;
    }
    let n = store.for_each_batch_body(row.id, |idx, body| {
        let body = one_line(body);
        match row.api {
            BatchApi::OpenAi => writeln!(
                out,
                "{{\"custom_id\":\"{}\",\"method\":\"POST\",\"url\":{endpoint},\"body\":{body}}}",
                line_id(idx)
            ),
            BatchApi::Anthropic => {
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                write!(
                    out,
                    "{{\"custom_id\":\"{}\",\"params\":{body}}}",
                    line_id(idx)
                )
            }
        }
    })?;
    if row.api == BatchApi::Anthropic {
        out.write_all(b"]}").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(n)
}

/// Removes a batch's input file, if it is there.
pub(crate) fn remove_input(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("could not remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_go_in_on_one_line() {
        assert_eq!(one_line(r#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(one_line("{\"a\":\n1}"), r#"{"a":1}"#);
        assert_eq!(
            input_path(Path::new("/x/j.pacer.db"), BatchApi::OpenAi, 3),
            PathBuf::from("/x/j.pacer.db.batch-3.jsonl")
        );
    }
}
