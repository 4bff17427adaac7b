use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::cost::Usage;

/// A stable `id` for an output line (OpenAI's batch output has `batch_req_…`).
fn line_id(custom_id: &str) -> String {
    let hash = blake3::hash(custom_id.as_bytes());
    format!("batch_req_{}", &hash.to_hex()[..24])
}

/// An answer's body as JSON; a body that is not JSON is kept as text.
pub fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| as_text(body))
}

/// A body that is not JSON, as a JSON string.
fn as_text(body: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(body).into_owned())
}

/// An answer's body read once, for its output line and its usage, without
/// building a JSON tree of it: the body is checked as JSON and kept as the
/// provider's own text (minified when it spans lines), and only `usage` and
/// `model` are picked out. Per request this was a tree of every key of the
/// completion, built, sorted and serialized again.
pub struct AnswerBody<'a> {
    /// What goes into the output line's `response.body`.
    pub json: OutputBody<'a>,
    pub usage: Option<Usage>,
    /// The answer's `model`, when it is a string.
    pub model: Option<String>,
}

/// The body as written into an output line.
pub enum OutputBody<'a> {
    /// Valid JSON on one line, written byte for byte.
    Raw(&'a RawValue),
    /// Valid JSON that spanned lines, minified.
    Minified(Box<RawValue>),
    /// Not JSON: the text, as a JSON string.
    Text(Value),
}

impl Serialize for OutputBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OutputBody::Raw(raw) => raw.serialize(s),
            OutputBody::Minified(raw) => raw.serialize(s),
            OutputBody::Text(text) => text.serialize(s),
        }
    }
}

/// The fields of an answer pacer reads; serde skips the rest without
/// allocating.
#[derive(serde::Deserialize)]
struct Picked {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    model: Option<Value>,
}

/// Reads an answer's body once (see [`AnswerBody`]).
pub fn read_answer(body: &[u8]) -> AnswerBody<'_> {
    let Ok(raw) = serde_json::from_slice::<&RawValue>(body) else {
        return AnswerBody {
            json: OutputBody::Text(as_text(body)),
            usage: None,
            model: None,
        };
    };
    let (usage, model) = match serde_json::from_str::<Picked>(raw.get()) {
        Ok(p) => (
            p.usage.as_ref().and_then(Usage::from_usage),
            p.model.and_then(|m| m.as_str().map(str::to_owned)),
        ),
        // Not an object, or one serde refuses (a key twice): the tree
        // reads it as before.
        Err(_) => {
            let tree: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
            (
                Usage::from_response(&tree),
                tree.get("model")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned),
            )
        }
    };
    // JSON text holds a line break only as whitespace between tokens (one
    // inside a string is escaped), so a body without one fits a line as is.
    let json = if has_line_break(raw.get().as_bytes()) {
        OutputBody::Minified(minify(raw))
    } else {
        OutputBody::Raw(raw)
    };
    AnswerBody { json, usage, model }
}

fn has_line_break(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == b'\n' || b == b'\r')
}

/// Valid JSON without the whitespace between its tokens. Written here
/// because serde_json minifies only through a tree (the cost this avoids);
/// the input was checked as JSON, so strings are the only state to track.
fn minify(raw: &RawValue) -> Box<RawValue> {
    let text = raw.get();
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    RawValue::from_string(out).unwrap_or_else(|_| raw.to_owned())
}

/// An output line, serialized straight from borrowed parts (no JSON tree is
/// built per request). Fields in alphabetical order, as the lines always
/// were written.
#[derive(Serialize)]
struct Line<'a, R: Serialize, E: Serialize> {
    custom_id: &'a str,
    error: E,
    id: String,
    response: R,
}

#[derive(Serialize)]
struct HttpResponse<'a, B: Serialize> {
    body: &'a B,
    request_id: &'a str,
    status_code: u16,
}

#[derive(Serialize)]
struct LineError<'a> {
    code: &'a str,
    message: &'a str,
}

/// The output line of a request answered over HTTP (success, or failed for
/// good with the provider's answer kept), in OpenAI's Batch output shape.
/// `body` is the answer read once ([`read_answer`], or [`parse_body`]).
pub fn response_line<B: Serialize>(
    custom_id: &str,
    status: u16,
    request_id: &str,
    body: &B,
) -> String {
    to_line(&Line {
        custom_id,
        error: None::<()>,
        id: line_id(custom_id),
        response: HttpResponse {
            body,
            request_id,
            status_code: status,
        },
    })
}

/// The output line of a request that failed for good with no HTTP answer.
pub fn error_line(custom_id: &str, code: &str, message: &str) -> String {
    to_line(&Line {
        custom_id,
        error: LineError { code, message },
        id: line_id(custom_id),
        response: None::<()>,
    })
}

fn to_line(line: &impl Serialize) -> String {
    // Only a map with non-string keys fails, and these have none.
    serde_json::to_string(line).expect("an output line serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_byte_for_byte_what_a_json_tree_gives() {
        let body = parse_body(br#"{"z":1,"a":{"y":[1,"\u00e9"],"b":null}}"#);
        let tree = serde_json::json!({
            "id": line_id("a\"b"),
            "custom_id": "a\"b",
            "response": {"status_code": 200, "request_id": "req_1", "body": body.clone()},
            "error": null,
        });
        assert_eq!(response_line("a\"b", 200, "req_1", &body), tree.to_string());
        let tree = serde_json::json!({
            "id": line_id("c"),
            "custom_id": "c",
            "response": null,
            "error": {"code": "timeout", "message": "no \"answer\""},
        });
        assert_eq!(
            error_line("c", "timeout", "no \"answer\""),
            tree.to_string()
        );
    }

    #[test]
    fn lines_have_the_batch_output_shape() {
        let v: Value = serde_json::from_str(&response_line(
            "a",
            200,
            "req_1",
            &parse_body(br#"{"x":1}"#),
        ))
        .unwrap();
        assert_eq!(v["custom_id"], "a");
        assert_eq!(v["response"]["status_code"], 200);
        assert_eq!(v["response"]["body"]["x"], 1);
        assert!(v["error"].is_null());
        assert!(v["id"].as_str().unwrap().starts_with("batch_req_"));
        let v: Value = serde_json::from_str(&error_line("b", "timeout", "no answer")).unwrap();
        assert!(v["response"].is_null());
        assert_eq!(v["error"]["code"], "timeout");
        // A body that is not JSON is kept as text.
        let v: Value = serde_json::from_str(&response_line(
            "c",
            502,
            "",
            &read_answer(b"<html>bad gateway").json,
        ))
        .unwrap();
        assert_eq!(v["response"]["body"], "<html>bad gateway");
    }

    #[test]
    fn an_answer_is_kept_as_the_provider_wrote_it_on_one_line() {
        // Pretty-printed, as OpenAI answers: keys keep their order, strings
        // keep their spaces, escapes and line breaks stay escaped.
        let pretty = b"{\n  \"id\": \"x\",\r\n  \"choices\": [ {\"text\": \"a  b\\n\\\" }\"} ],\n\t\"model\": \"gpt-4o-mini\",\n  \"usage\": {\"prompt_tokens\": 7, \"completion_tokens\": 2,\n \"prompt_tokens_details\": {\"cached_tokens\": 3}}\n}\n";
        let read = read_answer(pretty);
        let line = response_line("c", 200, "r", &read.json);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert!(
            line.contains(r#""body":{"id":"x","choices":[{"text":"a  b\n\" }"}],"model":"gpt-4o-mini","usage""#),
            "{line}"
        );
        let back: Value = serde_json::from_str(&line).unwrap();
        let tree: Value = serde_json::from_slice(pretty).unwrap();
        assert_eq!(back["response"]["body"], tree);
        assert_eq!(read.model.as_deref(), Some("gpt-4o-mini"));
        let u = read.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens, u.completion_tokens),
            (7, 3, 2)
        );
        // A body on one line is written byte for byte.
        let one = br#"{"b":1, "a":[1,2]}"#;
        let line = response_line("c", 200, "r", &read_answer(one).json);
        assert!(line.contains(r#""body":{"b":1, "a":[1,2]}"#), "{line}");
    }

    #[test]
    fn usage_and_model_read_as_the_tree_reads_them() {
        for body in [
            r#"{"usage":{"input_tokens":5,"output_tokens":1,"cache_read_input_tokens":2}}"#,
            r#"{"usage":null,"model":7}"#,
            r#"[1,2]"#,
            r#""text""#,
            // A key twice: serde's struct refuses it; the tree keeps the last.
            r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":9},"model":"m"}"#,
            r#"{"usage":{"prompt_tokens":1e300}}"#,
        ] {
            let read = read_answer(body.as_bytes());
            let tree: Value = serde_json::from_str(body).unwrap();
            assert_eq!(read.usage, Usage::from_response(&tree), "{body}");
            assert_eq!(
                read.model.as_deref(),
                tree.get("model").and_then(|m| m.as_str()),
                "{body}"
            );
        }
    }
}
