//! Prompt JSONL lines, and the request bodies generated from a prompt.

use serde_json::{Map, Number, Value};

use super::batch::{invalid, missing, parse_object};
use super::error::{InputError, Place};
use super::options::{ProviderHint, SourceOptions};
use super::spec::RequestSpec;
use crate::endpoint::Endpoint;
use crate::tokens::{estimate_request, DEFAULT_MAX_OUTPUT_TOKENS};

/// Turns a prompt (and an optional system prompt) into a complete request,
/// for prompt JSONL lines and folder documents alike.
#[derive(Debug, Clone)]
pub(crate) struct PromptRequests {
    model: String,
    max_tokens: Option<u64>,
    temperature: Option<f64>,
    provider: ProviderHint,
}

/// One prompt, before it becomes a request.
pub(crate) struct Prompt<'a> {
    pub id: String,
    pub system: Option<&'a str>,
    pub user: &'a str,
    pub max_tokens: Option<u64>,
    pub priority: i64,
    pub line: u64,
}

impl PromptRequests {
    /// `opts.model` must be set (checked by `Source::open`).
    pub(crate) fn new(opts: &SourceOptions, model: &str) -> PromptRequests {
        PromptRequests {
            model: model.to_owned(),
            max_tokens: opts.max_tokens,
            temperature: opts.temperature,
            provider: opts.provider.unwrap_or_default(),
        }
    }

    pub(crate) fn request(&self, prompt: Prompt<'_>) -> RequestSpec {
        let max_tokens = prompt.max_tokens.or(self.max_tokens);
        let mut body = Map::new();
        body.insert("model".into(), Value::String(self.model.clone()));
        let url = match self.provider {
            ProviderHint::OpenAi => {
                let mut messages = Vec::with_capacity(2);
                if let Some(system) = prompt.system {
                    messages.push(message("system", system));
                }
                messages.push(message("user", prompt.user));
                body.insert("messages".into(), Value::Array(messages));
                if let Some(max) = max_tokens {
                    body.insert("max_tokens".into(), max.into());
                }
                "/v1/chat/completions"
            }
            ProviderHint::Anthropic => {
                // Anthropic requires `max_tokens`; the default matches the
                // charge the estimator assumes for a request without one.
                body.insert(
                    "max_tokens".into(),
                    max_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS).into(),
                );
                if let Some(system) = prompt.system {
                    body.insert("system".into(), Value::String(system.to_owned()));
                }
                body.insert(
                    "messages".into(),
                    Value::Array(vec![message("user", prompt.user)]),
                );
                "/v1/messages"
            }
        };
        if let Some(t) = self.temperature.and_then(Number::from_f64) {
            body.insert("temperature".into(), Value::Number(t));
        }
        let body = Value::Object(body);
        RequestSpec {
            custom_id: prompt.id,
            method: "POST".to_owned(),
            url: url.to_owned(),
            estimate: estimate_request(Endpoint::from_path(url), &body),
            body: body.to_string(),
            body_at: None,
            priority: prompt.priority,
            model: Some(self.model.clone()),
            line: prompt.line,
        }
    }
}

fn message(role: &str, content: &str) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), Value::String(role.to_owned()));
    m.insert("content".into(), Value::String(content.to_owned()));
    Value::Object(m)
}

/// Parses and validates one prompt line:
/// `{"id", "prompt", "system"?, "priority"?, "max_tokens"?, "metadata"?}`.
/// `metadata` is the caller's own and stays out of the request.
pub(crate) fn parse_prompt_line(
    text: &str,
    file: &str,
    line: u64,
    requests: &PromptRequests,
) -> Result<RequestSpec, InputError> {
    let place = || Place::line(file, line);
    let obj = parse_object(text, place)?;
    let id = match obj.get("id") {
        None | Some(Value::Null) => return Err(missing(place(), "id")),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        // Numeric ids are common in exported data; they become their decimal text.
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => return Err(invalid(place(), "id", "a non-empty string or an integer")),
    };
    let user = match obj.get("prompt") {
        None | Some(Value::Null) => return Err(missing(place(), "prompt")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(invalid(place(), "prompt", "a string")),
    };
    let system = match obj.get("system") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid(place(), "system", "a string")),
    };
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => 0,
        Some(p) => p
            .as_i64()
            .ok_or_else(|| invalid(place(), "priority", "an integer"))?,
    };
    let max_tokens = match obj.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(m) => match m.as_u64() {
            Some(m) if m > 0 => Some(m),
            _ => return Err(invalid(place(), "max_tokens", "a positive integer")),
        },
    };
    Ok(requests.request(Prompt {
        id,
        system,
        user,
        max_tokens,
        priority,
        line,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(provider: Option<ProviderHint>) -> SourceOptions {
        SourceOptions {
            model: Some("gpt-4o-mini".into()),
            max_tokens: Some(200),
            temperature: Some(0.5),
            provider,
            ..SourceOptions::default()
        }
    }

    fn body(spec: &RequestSpec) -> Value {
        serde_json::from_str(&spec.body).unwrap()
    }

    #[test]
    fn a_prompt_becomes_a_chat_completion() {
        let requests = PromptRequests::new(&opts(None), "gpt-4o-mini");
        let line = r#"{"id":"q1","prompt":"Hello world","system":"Be brief.","priority":5,"metadata":{"k":"v"}}"#;
        let spec = parse_prompt_line(line, "prompts.jsonl", 2, &requests).unwrap();
        assert_eq!(spec.custom_id, "q1");
        assert_eq!(spec.url, "/v1/chat/completions");
        assert_eq!(spec.priority, 5);
        assert_eq!(spec.line, 2);
        assert_eq!(spec.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(
            body(&spec),
            json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello world"}],
                "max_tokens": 200, "temperature": 0.5})
        );
        assert_eq!(spec.estimate.max_output, 200);
    }

    #[test]
    fn a_line_max_tokens_wins_and_none_is_omitted() {
        let requests = PromptRequests::new(&opts(None), "gpt-4o-mini");
        let spec = parse_prompt_line(
            r#"{"id":7,"prompt":"x","max_tokens":50}"#,
            "p",
            1,
            &requests,
        )
        .unwrap();
        assert_eq!(spec.custom_id, "7");
        assert_eq!(body(&spec)["max_tokens"], 50);
        let bare = SourceOptions {
            model: Some("m".into()),
            ..SourceOptions::default()
        };
        let spec = parse_prompt_line(
            r#"{"id":"a","prompt":"x"}"#,
            "p",
            1,
            &PromptRequests::new(&bare, "m"),
        )
        .unwrap();
        assert_eq!(
            body(&spec),
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})
        );
    }

    #[test]
    fn a_prompt_becomes_an_anthropic_message() {
        let requests = PromptRequests::new(&opts(Some(ProviderHint::Anthropic)), "claude-sonnet-4");
        let line = r#"{"id":"q1","prompt":"Hello","system":"Be brief."}"#;
        let spec = parse_prompt_line(line, "p", 1, &requests).unwrap();
        assert_eq!(spec.url, "/v1/messages");
        assert_eq!(
            body(&spec),
            json!({"model": "claude-sonnet-4", "system": "Be brief.", "max_tokens": 200,
                   "messages": [{"role": "user", "content": "Hello"}], "temperature": 0.5})
        );
        let bare = SourceOptions {
            provider: Some(ProviderHint::Anthropic),
            ..SourceOptions::default()
        };
        let spec = parse_prompt_line(
            r#"{"id":"a","prompt":"x"}"#,
            "p",
            1,
            &PromptRequests::new(&bare, "c"),
        )
        .unwrap();
        assert_eq!(body(&spec)["max_tokens"], 1024);
        assert!(body(&spec).get("system").is_none());
    }

    #[test]
    fn prompt_lines_are_validated() {
        let requests = PromptRequests::new(&opts(None), "m");
        let err = |line: &str| {
            parse_prompt_line(line, "p.jsonl", 4, &requests)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(r#"{"prompt":"x"}"#), "p.jsonl:4: missing field `id`");
        assert_eq!(err(r#"{"id":"a"}"#), "p.jsonl:4: missing field `prompt`");
        assert_eq!(
            err(r#"{"id":"a","prompt":["x"]}"#),
            "p.jsonl:4: `prompt` must be a string"
        );
        assert_eq!(
            err(r#"{"id":"a","prompt":"x","system":1}"#),
            "p.jsonl:4: `system` must be a string"
        );
        assert_eq!(
            err(r#"{"id":"a","prompt":"x","max_tokens":0}"#),
            "p.jsonl:4: `max_tokens` must be a positive integer"
        );
        assert_eq!(
            err(r#"{"id":1.5,"prompt":"x"}"#),
            "p.jsonl:4: `id` must be a non-empty string or an integer"
        );
    }
}
