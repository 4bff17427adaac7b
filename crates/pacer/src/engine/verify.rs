//! `pacer verify`, and the check `pacer run` makes before its first request:
//! one cheap call that tells a wrong key from a right one, so that a wrong key
//! costs one request, not a batch.

use std::time::SystemTime;

use serde_json::Value;

use crate::provider::{parse_rate_limit_headers, RateLimitSnapshot};
use crate::retry::StopReason;
use crate::transport::{display_url, Transport, TransportError};

/// What the provider said about the key and the models.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The key works. `models` pairs each asked model with whether the
    /// provider lists it (`None`: the provider gave no usable list).
    KeyAccepted {
        models: Vec<(String, Option<bool>)>,
        limits: RateLimitSnapshot,
    },
    /// The key is refused, or the provider redirects elsewhere: running
    /// would be pointless.
    Refused(StopReason),
    /// Nothing answers at the base URL (refused, no such host, TLS failed, no
    /// connection in time): every request would fail the same way, so the run
    /// stops before sending any. Holds [`StopReason::Unreachable`].
    Unreachable(StopReason),
    /// No conclusion (no `/models` endpoint, a server error, a timeout after
    /// connecting): the run goes on and finds out from its first answers.
    Inconclusive(String),
}

/// Asks `GET /v1/models` (OpenAI's and Anthropic's model list).
pub async fn verify(transport: &Transport, anthropic: bool, models: &[String]) -> Verdict {
    let answer = match transport.get("/v1/models", anthropic).await {
        Ok(a) => a,
        Err(TransportError::Redirect { status, location }) => {
            return Verdict::Refused(StopReason::Redirected { status, location })
        }
        Err(e) => {
            return match e.unreached_cause() {
                Some(cause) => Verdict::Unreachable(StopReason::Unreachable {
                    url: display_url(&transport.endpoint("/v1/models")),
                    cause,
                }),
                None => Verdict::Inconclusive(format!("could not reach the provider: {e}")),
            }
        }
    };
    let limits = parse_rate_limit_headers(&answer.headers, SystemTime::now());
    match answer.status {
        401 => Verdict::Refused(StopReason::Unauthorized { status: 401 }),
        403 => Verdict::Refused(StopReason::Forbidden),
        200..=299 => {
            let listed: Option<Vec<String>> = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|v| {
                    v.get("data").and_then(Value::as_array).map(|items| {
                        items
                            .iter()
                            .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
                            .collect()
                    })
                });
            let models = models
                .iter()
                .map(|m| {
                    (
                        m.clone(),
                        listed.as_ref().map(|l| l.iter().any(|id| id == m)),
                    )
                })
                .collect();
            Verdict::KeyAccepted { models, limits }
        }
        status => Verdict::Inconclusive(format!("GET /v1/models answered {status}")),
    }
}
