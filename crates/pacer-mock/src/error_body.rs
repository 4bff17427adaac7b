//! Provider-shaped error bodies.
//!
//! Clients branch on these fields (`error.code == "insufficient_quota"` stops
//! a run, `rate_limit_exceeded` pauses it), so they copy the real providers'
//! shapes: OpenAI's `{"error":{"message","type","param","code"}}` and
//! Anthropic's `{"type":"error","error":{"type","message"}}`.

use serde_json::{json, Value};

/// OpenAI's error body.
pub(crate) fn openai(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// Anthropic's error body.
pub(crate) fn anthropic(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// A 401 that never echoes the key it was given.
pub(crate) fn unauthorized(anthropic_shape: bool, key_given: bool) -> Value {
    let message = if key_given {
        "Incorrect API key provided. The accepted keys are set with `pacer mock --keys` (see --help)."
    } else {
        "You didn't provide an API key. Send it as `Authorization: Bearer KEY` or `x-api-key: KEY`."
    };
    if anthropic_shape {
        anthropic(
            "authentication_error",
            if key_given {
                "invalid x-api-key"
            } else {
                message
            },
        )
    } else {
        openai(message, "invalid_request_error", Some("invalid_api_key"))
    }
}

/// A 400 for a malformed request.
pub(crate) fn invalid_request(anthropic_shape: bool, message: &str) -> Value {
    if anthropic_shape {
        anthropic("invalid_request_error", message)
    } else {
        openai(message, "invalid_request_error", None)
    }
}

/// The 429 billing stop: readable by either provider's client through `error.code`.
pub(crate) fn insufficient_quota(anthropic_shape: bool) -> Value {
    let message = "You exceeded your current quota, please check your plan and billing details.";
    if anthropic_shape {
        json!({"type": "error", "error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": message}})
    } else {
        openai(message, "insufficient_quota", Some("insufficient_quota"))
    }
}

/// A 429 rate-limit refusal with `message` saying how long to wait.
pub(crate) fn rate_limited(anthropic_shape: bool, kind: &str, message: &str) -> Value {
    if anthropic_shape {
        anthropic("rate_limit_error", message)
    } else {
        openai(message, kind, Some("rate_limit_exceeded"))
    }
}

/// A 5xx server error (500, 502, 503).
pub(crate) fn server_error(anthropic_shape: bool, status: u16) -> Value {
    let message = match status {
        502 => "Bad gateway.",
        503 => "The server is temporarily unavailable. Please try again later.",
        _ => "The server had an error while processing your request. Sorry about that!",
    };
    if anthropic_shape {
        anthropic("api_error", message)
    } else {
        openai(message, "server_error", None)
    }
}

/// Anthropic's 529, sent on every endpoint.
pub(crate) fn overloaded() -> Value {
    anthropic("overloaded_error", "Overloaded")
}

/// A 404 for a path the simulator does not serve.
pub(crate) fn not_found(method: &str, path: &str) -> Value {
    openai(
        &format!("Invalid URL ({method} {path})"),
        "invalid_request_error",
        None,
    )
}
