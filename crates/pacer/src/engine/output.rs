use serde::Serialize;
use serde_json::Value;

/// A stable `id` for an output line (OpenAI's batch output has `batch_req_…`).
fn line_id(custom_id: &str) -> String {
    let hash = blake3::hash(custom_id.as_bytes());
    format!("batch_req_{}", &hash.to_hex()[..24])
}

/// An answer's body as JSON; a body that is not JSON is kept as text.
pub fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
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
struct HttpResponse<'a> {
    body: &'a Value,
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
/// `body` is the answer parsed once ([`parse_body`]), also for usage.
pub fn response_line(custom_id: &str, status: u16, request_id: &str, body: Value) -> String {
    to_line(&Line {
        custom_id,
        error: None::<()>,
        id: line_id(custom_id),
        response: HttpResponse {
            body: &body,
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
        assert_eq!(response_line("a\"b", 200, "req_1", body), tree.to_string());
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
        let v: Value =
            serde_json::from_str(&response_line("a", 200, "req_1", parse_body(br#"{"x":1}"#)))
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
            parse_body(b"<html>bad gateway"),
        ))
        .unwrap();
        assert_eq!(v["response"]["body"], "<html>bad gateway");
    }
}
