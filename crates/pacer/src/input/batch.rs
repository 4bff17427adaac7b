//! One line of an OpenAI Batch JSONL file.

use serde_json::{Map, Value};

use super::error::{InputError, Place};
use super::spec::RequestSpec;
use crate::endpoint::Endpoint;
use crate::tokens::estimate_request;

/// Parses and validates one Batch line:
/// `{"custom_id", "method": "POST", "url": "/v1/...", "body": {...}}`, plus
/// pacer's optional integer `priority`.
///
/// `line_at` is where `text` starts in the input file: the body, sent as
/// written, is then also known by where it is in the file.
pub(crate) fn parse_batch_line(
    text: &str,
    file: &str,
    line: u64,
    line_at: Option<u64>,
) -> Result<RequestSpec, InputError> {
    let place = || Place::line(file, line);
    let mut obj = parse_object(text, place)?;

    let custom_id = match obj.remove("custom_id") {
        None | Some(Value::Null) => return Err(missing(place(), "custom_id")),
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(_) => return Err(invalid(place(), "custom_id", "a non-empty string")),
    };
    match obj.get("method") {
        None | Some(Value::Null) => return Err(missing(place(), "method")),
        Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
        Some(Value::String(m)) => {
            return Err(InputError::UnsupportedMethod {
                place: place(),
                method: m.clone(),
            })
        }
        Some(_) => return Err(invalid(place(), "method", "the string \"POST\"")),
    }
    let url = match obj.remove("url") {
        None | Some(Value::Null) => return Err(missing(place(), "url")),
        Some(Value::String(u)) if is_endpoint_path(&u) => u,
        Some(_) => {
            return Err(invalid(
                place(),
                "url",
                "an endpoint path like /v1/chat/completions",
            ))
        }
    };
    let body = match obj.remove("body") {
        None | Some(Value::Null) => return Err(missing(place(), "body")),
        Some(body @ Value::Object(_)) => body,
        Some(_) => return Err(invalid(place(), "body", "a JSON object")),
    };
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => 0,
        Some(p) => p
            .as_i64()
            .ok_or_else(|| invalid(place(), "priority", "an integer"))?,
    };

    let estimate = estimate_request(Endpoint::from_path(&url), &body);
    let model = body.get("model").and_then(Value::as_str).map(str::to_owned);
    let (body_at, body) = match raw_body(text) {
        Some((at, raw)) => (line_at.map(|line_at| line_at + at as u64), raw),
        None => (None, body.to_string()),
    };
    Ok(RequestSpec {
        custom_id,
        method: "POST".to_owned(),
        body,
        body_at,
        url,
        priority,
        estimate,
        model,
        line,
    })
}

/// The line's `body` exactly as written (key order, spacing, number
/// spelling): the README promises bodies are sent as they are, and a
/// provider's cache or a signature may depend on the bytes. `None` only in
/// the odd case serde refuses (a duplicated `body` key), where the parsed
/// value stands in.
/// With the body: where it starts in `text`.
fn raw_body(text: &str) -> Option<(usize, String)> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        body: &'a serde_json::value::RawValue,
    }
    serde_json::from_str::<Line<'_>>(text).ok().map(|l| {
        let raw = l.body.get();
        // A borrowed RawValue is a slice of `text`.
        (
            raw.as_ptr() as usize - text.as_ptr() as usize,
            raw.to_owned(),
        )
    })
}

/// Parses a line that must hold one JSON object.
pub(crate) fn parse_object(
    text: &str,
    place: impl Fn() -> Place,
) -> Result<Map<String, Value>, InputError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(InputError::NotObject { place: place() }),
        Err(e) => Err(InputError::json(place(), &e)),
    }
}

/// `/v1/chat/completions` and the like: a path, not a full URL (the base URL
/// says where), and nothing a request line could not carry.
fn is_endpoint_path(url: &str) -> bool {
    url.len() > 1
        && url.starts_with('/')
        && !url.starts_with("//")
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub(crate) fn missing(place: Place, field: &'static str) -> InputError {
    InputError::MissingField { place, field }
}

pub(crate) fn invalid(place: Place, field: &'static str, expected: &'static str) -> InputError {
    InputError::InvalidField {
        place,
        field,
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RequestSpec, String> {
        parse_batch_line(text, "requests.jsonl", 3, None).map_err(|e| e.to_string())
    }

    #[test]
    fn the_body_is_kept_byte_for_byte() {
        let body = r#"{ "model": "gpt-4o", "temperature": 1.0e0, "messages": [{"role":"user","content":"z\u00e9"}], "a": 1 }"#;
        let spec = parse(&format!(
            r#"{{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{body}}}"#
        ))
        .unwrap();
        assert_eq!(spec.body, body);
    }

    #[test]
    fn a_valid_line_becomes_a_request() {
        let spec = parse(
            r#"{"custom_id":"doc-1","method":"post","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}],"max_tokens":10}}"#,
        )
        .unwrap();
        assert_eq!(spec.custom_id, "doc-1");
        assert_eq!(spec.method, "POST");
        assert_eq!(spec.url, "/v1/chat/completions");
        assert_eq!(spec.model.as_deref(), Some("gpt-4o"));
        assert_eq!(spec.priority, 0);
        assert_eq!(spec.line, 3);
        assert_eq!(spec.estimate.prompt, 9);
        assert_eq!(spec.estimate.max_output, 10);
        let body: Value = serde_json::from_str(&spec.body).unwrap();
        assert_eq!(body["messages"][0]["content"], "Hello world");
    }

    #[test]
    fn the_body_is_kept_as_equivalent_json() {
        let body = r#"{"model":"m","input":["a","b"],"x":{"nested":[1,2.5,-3,true,null,"é\n"]}}"#;
        let line =
            format!(r#"{{"custom_id":"e","method":"POST","url":"/v1/embeddings","body":{body}}}"#);
        let spec = parse(&line).unwrap();
        let got: Value = serde_json::from_str(&spec.body).unwrap();
        let want: Value = serde_json::from_str(body).unwrap();
        assert_eq!(got, want);
        assert_eq!(spec.estimate.max_output, 0);
    }

    #[test]
    fn priority_is_an_optional_integer() {
        let line = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{},"priority":7}"#;
        assert_eq!(parse(line).unwrap().priority, 7);
        let line = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{},"priority":"high"}"#;
        assert_eq!(
            parse(line).unwrap_err(),
            "requests.jsonl:3: `priority` must be an integer"
        );
    }

    #[test]
    fn each_problem_has_its_sentence() {
        let cases = [
            (
                r#"{"custom_id":"a""#,
                "requests.jsonl:3: not valid JSON: EOF while parsing an object at column 16",
            ),
            (
                r#"{"custom_id":"a" "x":1}"#,
                "requests.jsonl:3: not valid JSON: expected `,` or `}` at column 18",
            ),
            ("[1,2]", "requests.jsonl:3: a line must be a JSON object"),
            (
                r#"{"method":"POST","url":"/v1/x","body":{}}"#,
                "requests.jsonl:3: missing field `custom_id`",
            ),
            (
                r#"{"custom_id":"","method":"POST","url":"/v1/x","body":{}}"#,
                "requests.jsonl:3: `custom_id` must be a non-empty string",
            ),
            (
                r#"{"custom_id":5,"method":"POST","url":"/v1/x","body":{}}"#,
                "requests.jsonl:3: `custom_id` must be a non-empty string",
            ),
            (
                r#"{"custom_id":"a","url":"/v1/x","body":{}}"#,
                "requests.jsonl:3: missing field `method`",
            ),
            (
                r#"{"custom_id":"a","method":"GET","url":"/v1/x","body":{}}"#,
                "requests.jsonl:3: method \"GET\" is not supported (pacer sends POST requests)",
            ),
            (
                r#"{"custom_id":"a","method":"POST","body":{}}"#,
                "requests.jsonl:3: missing field `url`",
            ),
            (
                r#"{"custom_id":"a","method":"POST","url":"https://api.openai.com/v1/x","body":{}}"#,
                "requests.jsonl:3: `url` must be an endpoint path like /v1/chat/completions",
            ),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/x"}"#,
                "requests.jsonl:3: missing field `body`",
            ),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/x","body":"hi"}"#,
                "requests.jsonl:3: `body` must be a JSON object",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).unwrap_err(), want, "for {line}");
        }
    }
}
