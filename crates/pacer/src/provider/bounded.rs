//! The one place where numbers a server sent become durations, counts and
//! dates, each within a cap.
//!
//! A server is not trusted to be sane: `retry-after: 1e19`, a limit of
//! 10^23 or a reset in the year 300000 must not panic (`Instant + d`,
//! `UNIX_EPOCH + d` and `Duration::from_secs_f64` all can), nor make pacer
//! wait for ever. Readers here saturate or cap; whatever cannot be read is
//! `None`, with one warning per header name per process (a flood of bad
//! answers must not flood the log).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::duration::parse_seconds;

/// No server-given wait or reset is acted on beyond this: a day. A longer
/// wait is still reported as asked ([`ServerWait::asked`]), so the run can
/// stop and say so instead of sleeping.
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(24 * 3600);

/// No server-given count (limit, remaining, tokens used) is taken above this:
/// 10^12, far above any real limit or usage, far below where sums overflow.
pub const MAX_COUNT: u64 = 1_000_000_000_000;

/// Where a server's wait came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitSource {
    /// `retry-after` (seconds or an HTTP date; OpenAI and Anthropic).
    RetryAfter,
    /// `retry-after-ms` (OpenAI).
    RetryAfterMs,
    /// The hint in a 429's message ("try again in 20s").
    Message,
}

impl WaitSource {
    /// The header's name, or what stands for it.
    pub fn name(self) -> &'static str {
        match self {
            WaitSource::RetryAfter => "retry-after",
            WaitSource::RetryAfterMs => "retry-after-ms",
            WaitSource::Message => "the error message",
        }
    }
}

impl fmt::Display for WaitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A few bytes of the server's own text, kept to quote it (`Copy`, so the
/// retry verdicts that carry it stay `Copy`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    buf: [u8; Quoted::CAP],
    len: u8,
    cut: bool,
}

impl Quoted {
    const CAP: usize = 40;

    pub fn new(text: &str) -> Quoted {
        let text = text.trim();
        let mut end = text.len().min(Self::CAP);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0; Self::CAP];
        buf[..end].copy_from_slice(&text.as_bytes()[..end]);
        Quoted {
            buf,
            len: end as u8,
            cut: end < text.len(),
        }
    }

    pub fn as_str(&self) -> &str {
        // Built from a `&str` cut at a char boundary.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// A wait a server asked for, where it asked, and in what words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerWait {
    /// As asked (saturating at `Duration::MAX`): only for deciding and telling.
    pub asked: Duration,
    pub source: WaitSource,
    /// The value as sent (the header's value, or the hint's words).
    pub raw: Quoted,
}

impl ServerWait {
    pub fn new(asked: Duration, source: WaitSource, raw: &str) -> ServerWait {
        ServerWait {
            asked,
            source,
            raw: Quoted::new(raw),
        }
    }

    /// The wait to act on: as asked, at most [`MAX_SERVER_WAIT`].
    pub fn wait(&self) -> Duration {
        self.asked.min(MAX_SERVER_WAIT)
    }
}

impl fmt::Display for ServerWait {
    /// `retry-after: 999999999`, or `"try again in 20s" in the error message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            WaitSource::Message => write!(f, "\"try again in {}\" in the error message", self.raw),
            source => write!(f, "{source}: {}", self.raw),
        }
    }
}

/// Seconds (a bare number or a Go duration such as `6m0s`) as a server sent
/// them, saturating: `1e30` is `Duration::MAX`, not an error. Negative, NaN,
/// infinite or unreadable: `None`.
pub fn server_seconds(v: &str) -> Option<Duration> {
    saturating_secs(parse_seconds(v)?)
}

/// Seconds as f64 to a `Duration`, saturating at `Duration::MAX`; negative,
/// NaN and infinite values are `None` (an infinity is a parse accident, not
/// a wait).
pub fn saturating_secs(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// The wait until wall time `at` from `now` (zero when past), capped at
/// [`MAX_SERVER_WAIT`].
pub fn wait_until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_SERVER_WAIT)
}

/// A Unix time in seconds; `None` beyond what `SystemTime` holds.
pub fn unix_time(since_epoch: Duration) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

/// A count (`59`, or `59.0` as some servers write it), capped at
/// [`MAX_COUNT`]. Negative, fractional-garbage, NaN or infinite: `None`.
pub fn count(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n.min(MAX_COUNT));
    }
    let f: f64 = v.parse().ok()?;
    // `as` saturates; the cap keeps sums of counts far from overflow.
    (f.is_finite() && f >= 0.0).then(|| (f.floor() as u64).min(MAX_COUNT))
}

/// A count from JSON (`usage`), capped at [`MAX_COUNT`]; only non-negative
/// integers are counts.
pub fn json_count(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().map(|n| n.min(MAX_COUNT))
}

/// Warns that `header`'s value is ignored, once per header name per process.
pub fn warn_ignored(header: &str, value: &[u8], why: &str) {
    // Names come from pacer's own fixed list, so the set stays small.
    static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.contains(header) {
        return;
    }
    warned.insert(header.to_owned());
    drop(warned);
    let shown: String = String::from_utf8_lossy(value).chars().take(64).collect();
    tracing::warn!(header, value = %shown, "{why} (said once per header)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_saturate_instead_of_failing() {
        assert_eq!(
            server_seconds("1e19"),
            Some(Duration::from_secs(10u64.pow(19)))
        );
        assert_eq!(server_seconds("1e30"), Some(Duration::MAX));
        assert_eq!(
            server_seconds("999999999999s"),
            Some(Duration::from_secs(999_999_999_999))
        );
        assert_eq!(server_seconds("6m0s"), Some(Duration::from_secs(360)));
        for bad in ["-1", "NaN", "inf", "-inf", "1e400", "", "soon"] {
            assert_eq!(server_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn counts_are_capped() {
        assert_eq!(count("99999999999999999999999"), Some(MAX_COUNT));
        assert_eq!(count("18446744073709551615"), Some(MAX_COUNT));
        assert_eq!(count("1e300"), Some(MAX_COUNT));
        assert_eq!(count("59.0"), Some(59));
        assert_eq!(count(" 7 "), Some(7));
        for bad in ["-3", "NaN", "inf", "lots", ""] {
            assert_eq!(count(bad), None, "{bad}");
        }
        assert_eq!(json_count(&serde_json::json!(u64::MAX)), Some(MAX_COUNT));
        assert_eq!(json_count(&serde_json::json!(-1)), None);
        assert_eq!(json_count(&serde_json::json!(1e300)), None);
    }

    #[test]
    fn dates_never_overflow() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(unix_time(Duration::MAX), None);
        assert_eq!(
            wait_until(now + Duration::from_secs(90), now),
            Duration::from_secs(90)
        );
        assert_eq!(wait_until(SystemTime::UNIX_EPOCH, now), Duration::ZERO);
        let far = now + Duration::from_secs(10u64.pow(12));
        assert_eq!(wait_until(far, now), MAX_SERVER_WAIT);
    }

    #[test]
    fn waits_are_capped_and_quoted() {
        let w = ServerWait::new(Duration::MAX, WaitSource::RetryAfter, " 1e19 ");
        assert_eq!(w.wait(), MAX_SERVER_WAIT);
        assert_eq!(w.to_string(), "retry-after: 1e19");
        let w = ServerWait::new(Duration::from_secs(2), WaitSource::Message, "2s");
        assert_eq!(w.to_string(), "\"try again in 2s\" in the error message");
        let long = "9".repeat(100);
        let q = Quoted::new(&long);
        assert_eq!(q.as_str().len(), Quoted::CAP);
        assert!(q.to_string().ends_with('…'));
        let q = Quoted::new(&"é".repeat(30));
        assert!(q.as_str().chars().all(|c| c == 'é'));
    }
}
