//! What kind of endpoint a request goes to, decided once.
//!
//! Auth headers, token counting, stream reassembly and usage all depend on
//! the endpoint. Guessing it from the URL's suffix in each place went wrong
//! on paths with a query (`/v1/messages?beta=true` was sent with OpenAI's
//! auth), so the kind is decided when a request is parsed, from its path
//! without query or fragment, stored with it, and read everywhere else.

use std::fmt;
use std::str::FromStr;

/// The API a request's path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// OpenAI `/v1/chat/completions` (and compatible servers).
    ChatCompletions,
    /// OpenAI's legacy `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
    /// OpenAI `/v1/responses`.
    Responses,
    /// Anthropic's Messages API, `/v1/messages`.
    Messages,
    /// Any other path: sent with OpenAI's conventions, counted generically,
    /// never streamed.
    Other,
}

impl Endpoint {
    /// The kind of an endpoint path such as `/v1/chat/completions` or
    /// `/v1/messages?beta=true`.
    pub fn from_path(path: &str) -> Endpoint {
        let path = path
            .split(['?', '#'])
            .next()
            .unwrap_or(path)
            .trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Endpoint::ChatCompletions
        } else if path.ends_with("/completions") {
            Endpoint::Completions
        } else if path.ends_with("/embeddings") {
            Endpoint::Embeddings
        } else if path.ends_with("/responses") {
            Endpoint::Responses
        } else if path.ends_with("/messages") {
            Endpoint::Messages
        } else {
            Endpoint::Other
        }
    }

    /// Anthropic's endpoints authenticate with `x-api-key` and
    /// `anthropic-version`, and answer in Anthropic's shapes.
    pub fn is_anthropic(self) -> bool {
        matches!(self, Endpoint::Messages)
    }

    /// The stable name stored in the job's state.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
            Endpoint::Other => "other",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a stored name back; unknown names are an error.
impl FromStr for Endpoint {
    type Err = ();

    fn from_str(s: &str) -> Result<Endpoint, ()> {
        Ok(match s {
            "chat" => Endpoint::ChatCompletions,
            "completions" => Endpoint::Completions,
            "embeddings" => Endpoint::Embeddings,
            "responses" => Endpoint::Responses,
            "messages" => Endpoint::Messages,
            "other" => Endpoint::Other,
            _ => return Err(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_comes_from_the_path_without_its_query() {
        use Endpoint::*;
        for (path, kind) in [
            ("/v1/chat/completions", ChatCompletions),
            ("/v1/chat/completions/", ChatCompletions),
            (
                "/openai/deployments/x/chat/completions?api-version=2024-10-21",
                ChatCompletions,
            ),
            ("/v1/completions", Completions),
            ("/v1/embeddings", Embeddings),
            ("/v1/responses", Responses),
            ("/v1/messages", Messages),
            ("/v1/messages?beta=true", Messages),
            ("/v1/messages#x", Messages),
            ("/v1/moderations", Other),
            ("/v1/chat/completions-ish", Other),
            ("/v1/x?to=/v1/messages", Other),
        ] {
            assert_eq!(Endpoint::from_path(path), kind, "{path}");
        }
    }

    #[test]
    fn stored_names_read_back() {
        use Endpoint::*;
        for kind in [
            ChatCompletions,
            Completions,
            Embeddings,
            Responses,
            Messages,
            Other,
        ] {
            assert_eq!(kind.as_str().parse::<Endpoint>(), Ok(kind));
        }
        assert!("chat/completions".parse::<Endpoint>().is_err());
    }
}
