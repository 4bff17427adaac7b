//! `pacer export --by-document`: a split document's chunk results, joined.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::batch::{missing, parse_object};
use super::error::{InputError, Place};

/// One line of the export.
#[derive(Serialize)]
struct DocumentText<'a> {
    document: &'a str,
    chunks: u64,
    text: String,
    failed_chunks: Vec<String>,
}

/// Reads a results JSONL (the output shape in the README) and writes one JSON line
/// per document, in document order:
/// `{"document", "chunks", "text", "failed_chunks"}`. Chunk ids `path#k` are
/// grouped by `path` and ordered by `k`; an id without `#k` is a document of
/// one chunk. The reply texts (chat `choices[0].message.content`, Anthropic
/// `content[].text`, completions `choices[0].text`, Responses `output_text`)
/// are joined with a blank line. A chunk that failed, or is missing from the
/// results, is named in `failed_chunks`. Returns the number of documents.
///
/// Results come in completion order and may be large, so a first pass only
/// indexes where each chunk's line is; the texts are read document by
/// document in a second pass.
pub fn export_by_document(results: &Path, out: &mut dyn Write) -> Result<u64, InputError> {
    let name = results.display().to_string();
    let file = File::open(results).map_err(|e| InputError::io(results, e))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);

    // document -> chunk number -> (offset of its line, line number)
    let mut index: BTreeMap<String, BTreeMap<u64, (u64, u64)>> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| InputError::io(results, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let start = offset;
        offset += n as u64;
        let text = std::str::from_utf8(&buf).map_err(|_| InputError::NotUtf8 {
            place: Place::line(&name, line),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let obj = parse_object(text, || Place::line(&name, line))?;
        let Some(id) = obj.get("custom_id").and_then(Value::as_str) else {
            return Err(missing(Place::line(&name, line), "custom_id"));
        };
        let (document, k) = document_and_chunk(id);
        let chunks = index.entry(document.to_owned()).or_default();
        // Exactly one line per id is the contract; should a file hold two,
        // a success is preferred over a failure.
        let keep = match chunks.get(&k) {
            None => true,
            Some(_) => reply_text(&obj).is_some(),
        };
        if keep {
            chunks.insert(k, (start, line));
        }
    }

    let mut documents = 0;
    for (document, chunks) in &index {
        let split = chunks.keys().any(|&k| k > 0);
        let count = if split {
            chunks.keys().copied().max().unwrap_or(0)
        } else {
            1
        };
        let mut texts = Vec::new();
        let mut failed = Vec::new();
        let first = if split { 1 } else { 0 };
        for k in first..first + count {
            let id = if split {
                format!("{document}#{k}")
            } else {
                document.clone()
            };
            let text = match chunks.get(&k) {
                Some(&(at, line)) => {
                    reader
                        .seek(SeekFrom::Start(at))
                        .map_err(|e| InputError::io(results, e))?;
                    buf.clear();
                    reader
                        .read_until(b'\n', &mut buf)
                        .map_err(|e| InputError::io(results, e))?;
                    let text = std::str::from_utf8(&buf).unwrap_or("");
                    let obj = parse_object(text, || Place::line(&name, line))?;
                    reply_text(&obj)
                }
                None => None,
            };
            match text {
                Some(t) => texts.push(t),
                None => failed.push(id),
            }
        }
        let record = DocumentText {
            document,
            chunks: count,
            text: texts.join("\n\n"),
            failed_chunks: failed,
        };
        let mut line = serde_json::to_vec(&record).expect("a document record always serializes");
        line.push(b'\n');
        out.write_all(&line)
            .map_err(|e| InputError::io("output", e))?;
        documents += 1;
    }
    out.flush().map_err(|e| InputError::io("output", e))?;
    Ok(documents)
}

/// `path#3` → (`path`, 3); anything else is a whole document (chunk 0).
fn document_and_chunk(id: &str) -> (&str, u64) {
    if let Some((doc, k)) = id.rsplit_once('#') {
        if !doc.is_empty() && !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(k) = k.parse::<u64>() {
                if k > 0 {
                    return (doc, k);
                }
            }
        }
    }
    (id, 0)
}

/// The reply text of a successful result line, or `None` for a failure.
fn reply_text(result: &serde_json::Map<String, Value>) -> Option<String> {
    if result.get("error").is_some_and(|e| !e.is_null()) {
        return None;
    }
    let response = result.get("response")?;
    let status = response
        .get("status_code")
        .and_then(Value::as_u64)
        .unwrap_or(200);
    if !(200..300).contains(&status) {
        return None;
    }
    let body = response.get("body")?;
    // Chat completions, then completions.
    if let Some(choice) = body.get("choices").and_then(|c| c.get(0)) {
        if let Some(content) = choice.get("message").and_then(|m| m.get("content")) {
            return text_of(content);
        }
        return choice
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    // Anthropic Messages: text blocks.
    if let Some(blocks) = body.get("content").and_then(Value::as_array) {
        return Some(
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect(),
        );
    }
    // Responses: output[].content[] of type output_text.
    if let Some(output) = body.get("output").and_then(Value::as_array) {
        let text: String = output
            .iter()
            .filter_map(|o| o.get("content").and_then(Value::as_array))
            .flatten()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("output_text"))
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        return Some(text);
    }
    None
}

/// Message content: a string, or an array of text parts.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.as_str().or_else(|| p.get("text").and_then(Value::as_str)))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(id: &str, text: &str) -> Value {
        json!({"id": format!("r-{id}"), "custom_id": id, "response": {"status_code": 200, "request_id": "x",
            "body": {"choices": [{"message": {"role": "assistant", "content": text}}]}}, "error": null})
    }

    fn export(lines: &[Value]) -> Vec<Value> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        let n = export_by_document(&path, &mut out).unwrap();
        let docs: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(n as usize, docs.len());
        docs
    }

    #[test]
    fn chunks_are_joined_in_order_whatever_the_completion_order() {
        let docs = export(&[
            chat("b.txt#2", "B2"),
            chat("a.txt#10", "A10"),
            chat("b.txt#1", "B1"),
            chat("solo.txt", "S"),
            json!({"custom_id": "a.txt#1", "response": {"status_code": 200, "body": {"content": [{"type": "text", "text": "A1"}]}}, "error": null}),
            json!({"custom_id": "a.txt#2", "response": {"status_code": 200, "body": {"choices": [{"text": "A2"}]}}, "error": null}),
        ]);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["document"], "a.txt");
        assert_eq!(docs[0]["chunks"], 10);
        assert_eq!(docs[0]["text"], "A1\n\nA2\n\nA10");
        let missing: Vec<String> = (3..=9).map(|k| format!("a.txt#{k}")).collect();
        assert_eq!(docs[0]["failed_chunks"], json!(missing));
        assert_eq!(
            docs[1],
            json!({"document": "b.txt", "chunks": 2, "text": "B1\n\nB2", "failed_chunks": []})
        );
        assert_eq!(
            docs[2],
            json!({"document": "solo.txt", "chunks": 1, "text": "S", "failed_chunks": []})
        );
    }

    #[test]
    fn failed_chunks_are_named_and_left_out_of_the_text() {
        let docs = export(&[
            chat("d#1", "one"),
            json!({"custom_id": "d#2", "response": {"status_code": 400, "body": {"error": {"message": "bad"}}}, "error": null}),
            json!({"custom_id": "d#3", "response": null, "error": {"code": "timeout", "message": "timed out"}}),
            chat("d#4", "four"),
        ]);
        assert_eq!(docs[0]["text"], "one\n\nfour");
        assert_eq!(docs[0]["failed_chunks"], json!(["d#2", "d#3"]));
        assert_eq!(docs[0]["chunks"], 4);
    }

    #[test]
    fn a_bad_results_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        std::fs::write(&path, format!("{}\n{{\"x\":1}}\n", chat("a", "t"))).unwrap();
        let err = export_by_document(&path, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("results.jsonl:2: missing field `custom_id`"),
            "{err}"
        );
    }

    #[test]
    fn ids_split_on_the_last_numeric_suffix() {
        assert_eq!(document_and_chunk("a/b.txt#3"), ("a/b.txt", 3));
        assert_eq!(document_and_chunk("x#y#2"), ("x#y", 2));
        assert_eq!(document_and_chunk("x#y"), ("x#y", 0));
        assert_eq!(document_and_chunk("#2"), ("#2", 0));
        assert_eq!(document_and_chunk("x#0"), ("x#0", 0));
    }
}
