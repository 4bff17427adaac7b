use std::time::Duration;

/// Parses the durations providers put in headers and error messages.
///
/// OpenAI writes Go's `time.Duration` format (`1s`, `6m0s`, `20ms`,
/// `1m30.5s`, `1h2m3.5s`, `0s`); other OpenAI-compatible servers write a bare
/// number of seconds (`60`, `0.5`). Both are accepted, as are `us`/`µs`/`ns`
/// and surrounding whitespace. Anything else, a negative or non-finite value
/// included, is `None`: a wrong wait is worse than no hint.
pub fn parse_duration(s: &str) -> Option<Duration> {
    Duration::try_from_secs_f64(parse_seconds(s)?).ok()
}

/// The seconds in `s` (either form above) as a finite, non-negative f64;
/// `None` for anything else. Components too big to add up give `f64::MAX`
/// (huge, not garbage); the caller decides whether to saturate or refuse.
pub(crate) fn parse_seconds(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    // A bare number is seconds.
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some(secs);
    }
    let mut rest = s;
    let mut total = 0.0_f64; // seconds
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            // A number without a unit is only accepted alone (handled above):
            // in `1m30` nobody can tell whether 30 means seconds or minutes.
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    // Digits and dots only, so never negative or NaN; a sum can overflow.
    Some(if total.is_finite() { total } else { f64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn go_formats() {
        assert_eq!(parse_duration("1s"), ms(1000));
        assert_eq!(parse_duration("6m0s"), ms(360_000));
        assert_eq!(parse_duration("20ms"), ms(20));
        assert_eq!(parse_duration("1m30.5s"), ms(90_500));
        assert_eq!(parse_duration("1h2m3.5s"), ms(3_723_500));
        assert_eq!(parse_duration("0s"), ms(0));
        assert_eq!(parse_duration("500us"), Some(Duration::from_micros(500)));
        assert_eq!(parse_duration("500µs"), Some(Duration::from_micros(500)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("17.28s"), ms(17_280));
    }

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse_duration("60"), ms(60_000));
        assert_eq!(parse_duration("0.5"), ms(500));
        assert_eq!(parse_duration(" 2 "), ms(2000));
        assert_eq!(parse_duration("0"), ms(0));
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "", " ", "s", "abc", "1x", "1m30", "-1s", "-5", "1..2s", "NaN", "inf", "1 s", "m1s",
            "1e400",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
