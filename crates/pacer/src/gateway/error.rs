use std::net::SocketAddr;
use std::path::PathBuf;

use crate::transport::TransportError;

/// Why the gateway cannot start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A line of the client keys file (or the file itself) is wrong.
    #[error("the client keys file {place}: {problem}")]
    ClientKeys { place: String, problem: String },
    /// Off loopback, anyone who can reach the port would spend the key.
    #[error(
        "pacer serve will not listen on {listen} without --client-keys: anyone who can reach \
         it would spend the upstream key; give --client-keys FILE, or listen on 127.0.0.1"
    )]
    OpenWithoutKeys { listen: SocketAddr },
    /// The upstream is the gateway's own address.
    #[error(
        "the upstream {url} is this gateway's own address (is $OPENAI_BASE_URL or \
         $ANTHROPIC_BASE_URL pointing at it?); give --upstream / --anthropic-upstream"
    )]
    UpstreamIsSelf { url: String },
    #[error("the state file {}: {problem}", path.display())]
    State { path: PathBuf, problem: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the server failed: {0}")]
    Io(#[source] std::io::Error),
}

impl GatewayError {
    /// A mistake in what the user gave (exit 64), as opposed to a failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            GatewayError::ClientKeys { .. }
                | GatewayError::OpenWithoutKeys { .. }
                | GatewayError::State { .. }
                | GatewayError::UpstreamIsSelf { .. }
        )
    }
}
