use serde::Serialize;
use serde_json::Value;

use crate::provider::bounded;

/// Tokens a provider billed for one request, normalised across APIs.
///
/// `prompt_tokens` is every input token, cached ones included; `cached_tokens`
/// is the part of it served from the prompt cache (billed at the cached price).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    /// The `usage` of a response body from any supported endpoint:
    /// - OpenAI chat, completions, embeddings: `usage.prompt_tokens`,
    ///   `usage.completion_tokens` (absent for embeddings),
    ///   `usage.prompt_tokens_details.cached_tokens`;
    /// - OpenAI Responses: `usage.input_tokens`, `output_tokens`,
    ///   `input_tokens_details.cached_tokens` (input includes cached);
    /// - Anthropic Messages: `usage.input_tokens`, `output_tokens`,
    ///   `cache_read_input_tokens`, `cache_creation_input_tokens` (input
    ///   excludes both; both are added to the prompt, reads as cached).
    ///
    /// `None` when the body has no usage pacer understands. Each count is
    /// capped at [`MAX_COUNT`](crate::provider::MAX_COUNT) (a server's number, not to be trusted), so the
    /// sums here and downstream cannot overflow.
    pub fn from_response(body: &Value) -> Option<Usage> {
        Usage::from_usage(body.get("usage")?)
    }

    /// The same from the `usage` object alone (an answer read without
    /// building the tree of its whole body).
    pub fn from_usage(usage: &Value) -> Option<Usage> {
        let n = |v: &Value, key: &str| v.get(key).and_then(bounded::json_count);
        if let Some(prompt) = n(usage, "prompt_tokens") {
            let cached = usage
                .get("prompt_tokens_details")
                .and_then(|d| n(d, "cached_tokens"))
                .unwrap_or(0);
            return Some(Usage {
                prompt_tokens: prompt,
                cached_tokens: cached.min(prompt),
                completion_tokens: n(usage, "completion_tokens").unwrap_or(0),
            });
        }
        let input = n(usage, "input_tokens");
        let output = n(usage, "output_tokens");
        if input.is_none() && output.is_none() {
            return None;
        }
        // Responses API: the cache is a detail of input_tokens.
        let details_cached = usage
            .get("input_tokens_details")
            .and_then(|d| n(d, "cached_tokens"))
            .unwrap_or(0);
        // Anthropic: cache reads and writes are counted beside input_tokens.
        let cache_read = n(usage, "cache_read_input_tokens").unwrap_or(0);
        let cache_write = n(usage, "cache_creation_input_tokens").unwrap_or(0);
        let prompt = input.unwrap_or(0) + cache_read + cache_write; // ≤ 3·MAX_COUNT
        Some(Usage {
            prompt_tokens: prompt,
            cached_tokens: (details_cached + cache_read).min(prompt),
            completion_tokens: output.unwrap_or(0),
        })
    }

    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::MAX_COUNT;
    use serde_json::json;

    fn usage(prompt: u64, cached: u64, completion: u64) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: completion,
        })
    }

    #[test]
    fn reads_every_supported_shape() {
        let chat = json!({"usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024}}});
        assert_eq!(Usage::from_response(&chat), usage(1200, 1024, 300));
        let embeddings = json!({"usage": {"prompt_tokens": 8, "total_tokens": 8}});
        assert_eq!(Usage::from_response(&embeddings), usage(8, 0, 0));
        let responses = json!({"usage": {"input_tokens": 500, "input_tokens_details": {"cached_tokens": 200},
            "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 540}});
        assert_eq!(Usage::from_response(&responses), usage(500, 200, 40));
        let anthropic = json!({"usage": {"input_tokens": 20, "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 3000, "output_tokens": 50}});
        assert_eq!(Usage::from_response(&anthropic), usage(4020, 3000, 50));
        assert_eq!(usage(4020, 3000, 50).unwrap().total(), 4070);
    }

    #[test]
    fn no_usage_is_none() {
        assert_eq!(Usage::from_response(&json!({"id": "x"})), None);
        assert_eq!(Usage::from_response(&json!({"usage": null})), None);
        assert_eq!(Usage::from_response(&json!({"usage": {}})), None);
    }

    #[test]
    fn absurd_counts_are_capped_or_ignored() {
        let huge = json!({"usage": {"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX,
            "prompt_tokens_details": {"cached_tokens": u64::MAX}}});
        let u = Usage::from_response(&huge).unwrap();
        assert_eq!(u, usage(MAX_COUNT, MAX_COUNT, MAX_COUNT).unwrap());
        assert_eq!(u.total(), 2 * MAX_COUNT);
        let anthropic = json!({"usage": {"input_tokens": u64::MAX, "cache_read_input_tokens": u64::MAX,
            "cache_creation_input_tokens": u64::MAX, "output_tokens": -5}});
        let u = Usage::from_response(&anthropic).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3 * MAX_COUNT, 0));
        let odd = json!({"usage": {"prompt_tokens": 1e300, "completion_tokens": -1}});
        assert_eq!(Usage::from_response(&odd), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_numbers_parse_within_caps(
            a in proptest::prelude::any::<i128>(),
            b in proptest::prelude::any::<f64>(),
            c in proptest::prelude::any::<u64>(),
            keys in proptest::collection::vec(0usize..8, 0..8),
        ) {
            const KEYS: [&str; 8] = ["prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
                "cache_read_input_tokens", "cache_creation_input_tokens", "cached_tokens", "total_tokens"];
            let values = [json!(a as f64), json!(b), json!(c), serde_json::from_str::<Value>(&a.to_string()).unwrap_or(Value::Null)];
            let mut usage = serde_json::Map::new();
            let mut details = serde_json::Map::new();
            for (i, k) in keys.iter().enumerate() {
                let v = values[i % values.len()].clone();
                usage.insert(KEYS[*k].into(), v.clone());
                details.insert("cached_tokens".into(), v);
            }
            usage.insert("prompt_tokens_details".into(), Value::Object(details.clone()));
            usage.insert("input_tokens_details".into(), Value::Object(details));
            if let Some(u) = Usage::from_response(&json!({ "usage": usage })) {
                proptest::prop_assert!(u.prompt_tokens <= 3 * MAX_COUNT);
                proptest::prop_assert!(u.completion_tokens <= MAX_COUNT);
                proptest::prop_assert!(u.cached_tokens <= u.prompt_tokens);
                let _ = u.total();
            }
        }
    }
}
