use super::SharedError;

/// The set of limits a process shares: one upstream origin and one key.
///
/// Only a fingerprint leaves the process: blake3 of a domain tag, the
/// origin and the key, so Redis holds no key and nothing from which one
/// could be tested against another origin's fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct Scope {
    prefix: String,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Scope").field(&self.prefix).finish()
    }
}

impl Scope {
    /// The scope of requests to `base_url` (only its origin counts: every
    /// path on one host shares the account's limits) with `key`.
    pub fn new(base_url: &str, key: Option<&str>) -> Scope {
        let origin = reqwest::Url::parse(base_url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| base_url.to_string());
        let mut h = blake3::Hasher::new();
        h.update(b"pacer shared limits v1\0");
        h.update(origin.as_bytes());
        h.update(b"\0");
        h.update(key.unwrap_or("").as_bytes());
        let hex = h.finalize().to_hex();
        Scope {
            prefix: format!("pacer:v1:{}:", &hex[..32]),
        }
    }

    /// The Redis key named `what` in this scope.
    pub fn key(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// The prefix of every key in this scope.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Checks a `--redis` URL: `redis://[user:password@]host[:port][/db]`.
/// The error is one sentence and never shows the password.
pub fn check_url(url: &str) -> Result<(), SharedError> {
    let invalid = |reason: &str| SharedError::InvalidUrl {
        url: display_redis_url(url),
        reason: reason.into(),
    };
    let parsed =
        reqwest::Url::parse(url).map_err(|_| invalid("not a URL; expected redis://host:port"))?;
    match parsed.scheme() {
        "redis" => {}
        "rediss" => return Err(invalid(
            "TLS (rediss://) is not built in; use redis:// on a trusted network or a TLS tunnel",
        )),
        _ => {
            return Err(invalid(
                "the scheme must be redis://, as in redis://127.0.0.1:6379",
            ))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host; expected redis://host:port"));
    }
    let db = parsed.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(invalid(
            "the path must be a database number, as in redis://host:6379/0",
        ));
    }
    Ok(())
}

/// A Redis URL fit to print: any user name and password removed.
pub fn display_redis_url(url: &str) -> String {
    crate::transport::display_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_the_origin_and_key_fingerprinted() {
        let a = Scope::new("https://api.openai.com/v1", Some("sk-secret"));
        assert_eq!(
            a,
            Scope::new("https://api.openai.com/other", Some("sk-secret"))
        );
        assert_ne!(a, Scope::new("https://api.openai.com/v1", Some("sk-other")));
        assert_ne!(a, Scope::new("https://example.com/v1", Some("sk-secret")));
        assert!(!a.prefix().contains("sk-secret"));
        assert!(a.key("rtat").starts_with("pacer:v1:"));
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[test]
    fn urls_are_checked_in_one_sentence_without_the_password() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("redis://:pw@localhost:6379/2").is_ok());
        for bad in [
            "localhost:6379",
            "http://x",
            "redis://",
            "redis://h/x",
            "rediss://h",
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.starts_with("--redis "), "{e}");
        }
        let e = check_url("http://user:hunter2@h").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(
            display_redis_url("redis://u:hunter2@h:1/0"),
            "redis://h:1/0"
        );
    }
}
