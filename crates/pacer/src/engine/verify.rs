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
    /// The provider answered with a server error (5xx, 529): it is up but
    /// failing, so the run starts as in an outage, one probe at a time,
    /// instead of sending a first flight into it.
    ProviderDown(String),
    /// No conclusion (no `/models` endpoint, a timeout after connecting): the
    /// run goes on and finds out from its first answers.
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
        401 => Verdict::Refused(StopReason::Unauthorized {
            status: 401,
            key_source: transport.key_source().map(str::to_owned),
        }),
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
        status @ 500..=599 => Verdict::ProviderDown(format!("GET /v1/models answered {status}")),
        status => Verdict::Inconclusive(format!("GET /v1/models answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ApiKey, TransportConfig};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn transport(base_url: String) -> Transport {
        Transport::new(TransportConfig {
            base_url,
            api_key: Some(ApiKey::new("sk-planted-key")),
            timeout: Duration::from_secs(20),
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_naming_the_url_without_secrets() {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let t = transport(format!("http://user:sk-planted-key@{closed}/v1"));
        let v = verify(&t, false, &[]).await;
        let Verdict::Unreachable(reason) = v else {
            panic!("expected unreachable, got {v:?}")
        };
        assert_eq!(
            reason.to_string(),
            format!("could not connect to http://{closed}/v1/models: connection refused; check --base-url, then rerun the same command")
        );
    }

    #[tokio::test]
    async fn a_redirect_is_a_refusal_naming_where_it_points() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            // One connection is all the check makes.
            if let Ok((mut sock, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/v1/models?k=1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let v = verify(&transport(format!("http://{addr}/v1")), true, &[]).await;
        assert_eq!(
            v,
            Verdict::Refused(StopReason::Redirected {
                status: 307,
                location: "http://127.0.0.1:1/v1/models".into()
            })
        );
    }

    #[tokio::test]
    async fn a_server_error_says_the_provider_is_down_and_a_404_is_inconclusive() {
        for (status, down) in [("503 Service Unavailable", true), ("404 Not Found", false)] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let reply =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            tokio::spawn(async move {
                if let Ok((mut sock, _)) = l.accept().await {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock.write_all(reply.as_bytes()).await;
                }
            });
            let v = verify(&transport(format!("http://{addr}/v1")), false, &[]).await;
            if down {
                assert!(matches!(v, Verdict::ProviderDown(_)), "{v:?}");
            } else {
                assert!(matches!(v, Verdict::Inconclusive(_)), "{v:?}");
            }
        }
    }
}
