//! OpenAI's duration format for `x-ratelimit-reset-*` and 429 messages.
//!
//! OpenAI prints Go's `time.Duration` strings: `20ms`, `1s`, `1.5s`, `6m0s`,
//! `1m30.5s`, `1h0m0s`. Clients parse exactly these, so the simulator prints
//! them at millisecond precision, rounded up (a client that waits the printed
//! time must never arrive early).

use std::time::Duration;

/// Format `d` the way OpenAI's rate-limit headers do.
pub fn openai_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000) as u64;
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let secs_ms = ms % 60_000;
    let secs = fraction(secs_ms);
    if hours > 0 {
        format!("{hours}h{minutes}m{secs}s")
    } else if minutes > 0 {
        format!("{minutes}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `1500` ms → `1.5`, `1000` → `1`, `1020` → `1.02`.
fn fraction(ms: u64) -> String {
    let whole = ms / 1000;
    let frac = ms % 1000;
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:03}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_duration_strings() {
        let ms = Duration::from_millis;
        assert_eq!(openai_duration(Duration::ZERO), "0s");
        assert_eq!(openai_duration(ms(20)), "20ms");
        assert_eq!(
            openai_duration(Duration::from_micros(19_001)),
            "20ms",
            "rounded up"
        );
        assert_eq!(openai_duration(ms(1000)), "1s");
        assert_eq!(openai_duration(ms(1200)), "1.2s");
        assert_eq!(openai_duration(ms(1020)), "1.02s");
        assert_eq!(openai_duration(ms(360_000)), "6m0s");
        assert_eq!(openai_duration(ms(90_500)), "1m30.5s");
        assert_eq!(openai_duration(ms(3_600_000)), "1h0m0s");
    }
}
