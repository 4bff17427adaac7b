/// An API key. It is never printed: `Debug` and `Display` show a placeholder,
/// and pacer never writes it to the state file, the output or a log.
#[derive(Clone)]
pub struct ApiKey {
    secret: String,
    /// Where it came from (`$ANTHROPIC_API_KEY`), for the sentence that says
    /// which key to check: never the key itself.
    source: Option<String>,
}

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey {
            secret: key.into(),
            source: None,
        }
    }

    /// A key read from the environment variable `var`.
    pub fn from_env(var: &str, key: impl Into<String>) -> ApiKey {
        ApiKey {
            secret: key.into(),
            source: Some(format!("${var}")),
        }
    }

    /// The secret itself, for building the request's auth header only.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// Where the key came from, e.g. `$OPENAI_API_KEY`, when known.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_never_shows_in_debug_or_display() {
        let key = super::ApiKey::new("sk-secret-123");
        assert!(!format!("{key:?} {key}").contains("secret"));
        let key = super::ApiKey::from_env("ANTHROPIC_API_KEY", "sk-secret-123");
        assert_eq!(key.source(), Some("$ANTHROPIC_API_KEY"));
        assert!(!format!("{key:?} {key}").contains("secret"));
    }
}
