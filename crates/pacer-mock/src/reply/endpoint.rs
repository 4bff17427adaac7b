//! The endpoints the simulator serves.

/// A simulated endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic's `POST /v1/messages`.
    Messages,
    /// `GET /v1/models`.
    Models,
}

impl Endpoint {
    /// The endpoint serving `path` (`/v1/...`; a trailing slash is ignored).
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let path = path.trim_end_matches('/');
        [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::Messages,
            Endpoint::Models,
        ]
        .into_iter()
        .find(|e| path.ends_with(e.path()))
    }

    /// The endpoint's path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::Models => "/v1/models",
        }
    }

    /// Whether answers and errors take Anthropic's shape.
    pub fn is_anthropic(self) -> bool {
        self == Endpoint::Messages
    }

    /// Whether `"stream": true` is honoured.
    pub fn can_stream(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Messages
        )
    }
}
