//! Value parsers for flags. A bad value stops pacer at parse time, before
//! anything is sent. Each returns the rest of a sentence ("must be a positive
//! number, got -5"); main.rs puts the flag's name in front of it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a flag's (or an environment variable's) value cannot be used: the rest
/// of a sentence that starts with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// A rate, burst or cost: a finite number above 0.
pub fn positive_number(s: &str) -> Result<f64, Invalid> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(Invalid(format!("must be a positive number, got {s}"))),
    }
}

/// A finite number, 0 or more (temperature).
pub fn non_negative_number(s: &str) -> Result<f64, Invalid> {
    match s.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(Invalid(format!("must be a number, 0 or more, got {s}"))),
    }
}

/// A whole number of at least 1 (concurrency, token counts).
pub fn positive_int<T: FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, Invalid> {
    match s.trim().parse::<T>() {
        Ok(v) if v >= T::from(1) => Ok(v),
        _ => Err(Invalid(format!(
            "must be a whole number of at least 1, got {s}"
        ))),
    }
}

/// A whole number, 0 allowed (retries, overlap).
pub fn count<T: FromStr>(s: &str) -> Result<T, Invalid> {
    s.trim()
        .parse::<T>()
        .map_err(|_| Invalid(format!("must be a whole number, 0 or more, got {s}")))
}

/// A duration above 0: a zero timeout would send requests and throw every
/// answer away.
pub fn duration(s: &str) -> Result<Duration, Invalid> {
    match pacer::provider::parse_duration(s.trim()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(Invalid(format!(
            "must be a duration above 0 such as 30s, 5m, 1m30s or 500ms, got {s}"
        ))),
    }
}

/// An API base URL: absolute, http or https, with a host. Anything else would
/// make every request fail for good, slowly, after its retries.
pub fn base_url(s: &str) -> Result<String, Invalid> {
    check_base_url(s).map(|()| s.trim().to_string()).map_err(|why| {
        Invalid(format!(
            "must be an absolute http:// or https:// URL with a host, such as https://api.openai.com/v1; got {} ({why})",
            shown(s)
        ))
    })
}

/// Why `s` is not a usable base URL.
fn check_base_url(s: &str) -> Result<(), &'static str> {
    let s = s.trim();
    if s.chars().any(char::is_whitespace) {
        return Err("it holds a space");
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err("no scheme");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err("the scheme is not http or https");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port, host_chars): (&str, Option<&str>, fn(char) -> bool) =
        if let Some(v6) = host_port.strip_prefix('[') {
            match v6.split_once(']') {
                Some((h, rest)) if rest.is_empty() || rest.starts_with(':') => {
                    (h, rest.strip_prefix(':'), |c| {
                        c.is_ascii_hexdigit() || c == ':' || c == '.'
                    })
                }
                _ => return Err("a malformed IPv6 address"),
            }
        } else {
            let (h, p) = match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            };
            (h, p, |c| {
                c.is_alphanumeric() || matches!(c, '-' | '.' | '_')
            })
        };
    if host.is_empty() {
        return Err("no host");
    }
    if !host.chars().all(host_chars) {
        return Err("the host holds characters a host name cannot");
    }
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err("the port is not a number from 0 to 65535");
        }
    }
    Ok(())
}

/// The URL as the user gave it, minus any credentials before an `@`: a key
/// is never printed.
fn shown(s: &str) -> String {
    let s = s.trim();
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), s),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}…@{}", &rest[at + 1..]),
        None => s.to_string(),
    }
}

/// A `--redis` URL (`redis://[:password@]host[:port][/db]`); the value is
/// echoed without its password.
pub fn redis_url(s: &str) -> Result<String, Invalid> {
    let s = s.trim();
    match pacer::shared::check_url(s) {
        Ok(()) => Ok(s.to_string()),
        Err(pacer::shared::SharedError::InvalidUrl { url, reason }) => {
            Err(Invalid(format!("is not usable: {reason}; got {url}")))
        }
        Err(e) => Err(Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(positive_number("2.5"), Ok(2.5));
        assert_eq!(
            positive_number("-5").unwrap_err().0,
            "must be a positive number, got -5"
        );
        for bad in ["0", "inf", "NaN", "x", ""] {
            assert!(positive_number(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative_number("0"), Ok(0.0));
        assert!(non_negative_number("-0.1").is_err());
        assert_eq!(positive_int::<usize>("3"), Ok(3));
        assert!(positive_int::<usize>("0").is_err());
        assert!(positive_int::<u64>("-1").is_err());
        assert_eq!(count::<u32>("0"), Ok(0));
        assert!(count::<u32>("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        for bad in ["0", "0s", "-5s", "soon"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base_urls() {
        for good in [
            "https://api.openai.com/v1",
            "http://127.0.0.1:8080/v1",
            "HTTP://localhost",
            "http://[::1]:8080/v1",
            "https://user:pw@gateway.example/v1",
        ] {
            assert_eq!(base_url(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "not-a-url",
            "ftp://example.com",
            "https://",
            "https:///v1",
            "http://host:port/v1",
            "http://a b/v1",
            "localhost:8080",
            "",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_in_a_bad_url_are_not_echoed() {
        let e = base_url("ftp://sk-secret@example.com").unwrap_err().0;
        assert!(!e.contains("sk-secret"), "{e}");
        assert!(e.contains("ftp://…@example.com"), "{e}");
    }
}
