use serde_json::{json, Value};

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

/// The output line of a request answered over HTTP (success, or failed for
/// good with the provider's answer kept), in OpenAI's Batch output shape.
/// `body` is the answer parsed once ([`parse_body`]), also for usage.
pub fn response_line(custom_id: &str, status: u16, request_id: &str, body: Value) -> String {
    json!({
        "id": line_id(custom_id),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": null,
    })
    .to_string()
}

/// The output line of a request that failed for good with no HTTP answer.
pub fn error_line(custom_id: &str, code: &str, message: &str) -> String {
    json!({
        "id": line_id(custom_id),
        "custom_id": custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
