//! Every knob of `pacer mock`, as one clap `Args` struct so the CLI and tests
//! share the exact same names and defaults.

use std::net::SocketAddr;
use std::time::Duration;

/// The API key accepted when `--keys` is not given.
pub const DEFAULT_KEY: &str = "sk-mock-key";

/// How a 429 tells the client when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RetryAfterStyle {
    /// `retry-after` (whole seconds, rounded up) and `retry-after-ms`, as OpenAI sends them.
    #[default]
    Both,
    /// `retry-after: N` only, whole seconds rounded up.
    Seconds,
    /// `retry-after-ms: N` only.
    Ms,
    /// `retry-after: <HTTP date>`.
    HttpDate,
    /// No retry hint at all (the client must guess).
    None,
}

/// What the tokens-per-minute limiter charges a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ChargeMode {
    /// Prompt tokens counted with tiktoken, plus max_tokens × n.
    #[default]
    Tokens,
    /// OpenAI's limiter estimate: ⌈characters of all prompt text / 4⌉ + max_tokens × n.
    /// `usage` still reports tiktoken counts.
    Chars,
}

/// A window, measured from server start, during which every request gets 503.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    /// When the outage begins, after server start.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
}

impl Outage {
    /// Whether `since_start` falls inside the window.
    pub fn covers(&self, since_start: Duration) -> bool {
        since_start >= self.start && since_start < self.start + self.duration
    }
}

impl std::str::FromStr for Outage {
    type Err = String;

    /// `START:DURATION`, both in seconds (fractions allowed): `30:10`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (start, duration) = s
            .split_once(':')
            .ok_or_else(|| format!("expected START:DURATION in seconds, got {s:?}"))?;
        let secs = |v: &str| -> Result<Duration, String> {
            let f: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("not a number of seconds: {v:?}"))?;
            Duration::try_from_secs_f64(f)
                .map_err(|_| format!("not a valid number of seconds: {v:?}"))
        };
        Ok(Outage {
            start: secs(start)?,
            duration: secs(duration)?,
        })
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("not a number: {s:?}"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("a rate is between 0 and 1, got {f}"))
    }
}

/// `--window S`: seconds, above 0 and at most a minute.
fn parse_window(s: &str) -> Result<Duration, String> {
    let f: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if f > 0.0 && f <= 60.0 {
        Ok(Duration::from_secs_f64(f))
    } else {
        Err(format!(
            "a window is above 0 and at most 60 seconds, got {s}"
        ))
    }
}

/// `--batch-speed N`: requests per second, above 0.
fn parse_speed(s: &str) -> Result<f64, String> {
    let f: f64 = s
        .parse()
        .map_err(|_| format!("not a number of requests per second: {s:?}"))?;
    if f > 0.0 && f.is_finite() {
        Ok(f)
    } else {
        Err(format!("a speed is above 0 requests per second, got {s}"))
    }
}

/// `--batch-expire-after S`: seconds (fractions allowed), above 0.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let f: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if f > 0.0 {
        Duration::try_from_secs_f64(f).map_err(|_| format!("not a valid number of seconds: {s}"))
    } else {
        Err(format!("must be above 0 seconds, got {s}"))
    }
}

/// Batches expire 24 hours after creation, as both providers' do.
pub const DEFAULT_BATCH_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

fn parse_positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("not a whole number: {s:?}")),
    }
}

/// The simulated provider's configuration: every flag of `pacer mock`.
#[derive(Debug, Clone, clap::Args)]
pub struct MockConfig {
    /// Address to listen on (port 0 picks a free port; the bound address is printed first).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Accepted API keys, comma separated (Authorization: Bearer KEY or x-api-key: KEY).
    #[arg(long, value_name = "KEY,...", value_delimiter = ',', default_value = DEFAULT_KEY)]
    pub keys: Vec<String>,

    /// Requests per minute allowed per key (a continuously refilling bucket).
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub rpm: Option<u64>,

    /// Tokens per minute allowed per key; a request is charged prompt tokens + max_tokens × n at admission.
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub tpm: Option<u64>,

    /// Request bucket capacity (default: the full --rpm); the token bucket keeps the same share of --tpm.
    #[arg(long, value_name = "N", requires = "rpm", value_parser = parse_positive)]
    pub burst: Option<u64>,

    /// Enforce the per-minute limits over S seconds (Azure: 1 or 10; Anthropic: 1): each bucket
    /// holds limit × S/60 and refills at limit/60 per second. Excludes --burst; in the library,
    /// `window` wins over `burst` when both are set.
    #[arg(long, value_name = "S", value_parser = parse_window, conflicts_with = "burst")]
    pub window: Option<Duration>,

    /// What the tokens limiter charges: `tokens` (tiktoken) or `chars` (⌈prompt chars/4⌉).
    #[arg(long, value_name = "HOW", value_enum, default_value_t = ChargeMode::Tokens)]
    pub charge: ChargeMode,

    /// How 429s say when to retry.
    #[arg(long, value_name = "STYLE", value_enum, default_value_t = RetryAfterStyle::Both)]
    pub retry_after: RetryAfterStyle,

    /// Send no rate-limit headers (limits are still enforced).
    #[arg(long)]
    pub hide_headers: bool,

    /// After N accepted requests, every request gets 429 insufficient_quota.
    #[arg(long, value_name = "N")]
    pub quota: Option<u64>,

    /// Share of accepted requests answered 500/502/503.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,

    /// Share of accepted requests answered 529 overloaded_error.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub overload_rate: f64,

    /// Latency before answering, in milliseconds (the median when --latency-tail is set).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency: u64,

    /// Draw latency from a heavy-tailed (log-normal) distribution around --latency.
    #[arg(long)]
    pub latency_tail: bool,

    /// Share of requests accepted and never answered.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub hang_rate: f64,

    /// Share of requests whose connection is closed in the middle of the answer.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,

    /// START:DURATION in seconds after start during which everything gets 503 (repeatable).
    #[arg(long, value_name = "START:DURATION")]
    pub outage: Vec<Outage>,

    /// Seed for the fault dice, for repeatable runs (default: random).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub chunk_delay: u64,

    /// Share of streams ended early, without their final event or [DONE].
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub stream_cut_rate: f64,

    /// Batch APIs (OpenAI /v1/files + /v1/batches, Anthropic /v1/messages/batches):
    /// requests per second each batch is processed at, once validated.
    #[arg(long, value_name = "N", default_value_t = 1000.0, value_parser = parse_speed)]
    pub batch_speed: f64,

    /// Share of batch lines answered 500 server_error (Anthropic: errored, api_error), a
    /// retryable failure; resubmitted lines roll fresh dice. Lines with an invalid body
    /// always get a non-retryable 400 (invalid_request_error).
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub batch_line_error_rate: f64,

    /// Seconds after creation at which a batch expires (default: 24 hours): lines not
    /// processed by then end expired (OpenAI: batch `expired`, `batch_expired` in the
    /// error file; Anthropic: results of type `expired`).
    #[arg(long, value_name = "SECONDS", default_value = "86400", value_parser = parse_seconds)]
    pub batch_expire_after: Duration,

    /// OpenAI enqueued-token limit per model and key: the prompt + max_tokens × n of every
    /// line of batches not yet finished. A batch that would exceed it fails validation with
    /// `token_limit_exceeded`.
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub batch_token_limit: Option<u64>,

    /// Milliseconds a batch spends validating (at least: also while its lines are answered;
    /// Anthropic batches wait as long before processing, in_progress), finalizing and cancelling.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub batch_phase: u64,
}

impl Default for MockConfig {
    /// No limits, no faults, the default key, a free port on loopback.
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            keys: vec![DEFAULT_KEY.to_string()],
            rpm: None,
            tpm: None,
            burst: None,
            window: None,
            charge: ChargeMode::Tokens,
            retry_after: RetryAfterStyle::Both,
            hide_headers: false,
            quota: None,
            error_rate: 0.0,
            overload_rate: 0.0,
            latency: 0,
            latency_tail: false,
            hang_rate: 0.0,
            reset_rate: 0.0,
            outage: Vec::new(),
            seed: None,
            chunk_delay: 0,
            stream_cut_rate: 0.0,
            batch_speed: 1000.0,
            batch_line_error_rate: 0.0,
            batch_expire_after: DEFAULT_BATCH_EXPIRY,
            batch_token_limit: None,
            batch_phase: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockConfig,
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "mock",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            "a,b",
            "--rpm",
            "60",
            "--burst",
            "10",
            "--retry-after",
            "http-date",
            "--outage",
            "5:2.5",
            "--outage",
            "30:1",
            "--error-rate",
            "0.1",
        ])
        .unwrap();
        let m = cli.mock;
        assert_eq!(m.keys, vec!["a", "b"]);
        assert_eq!(m.rpm, Some(60));
        assert_eq!(m.burst, Some(10));
        assert_eq!(m.retry_after, RetryAfterStyle::HttpDate);
        assert_eq!(m.outage.len(), 2);
        assert_eq!(m.outage[0].duration, Duration::from_millis(2500));
        assert!(m.outage[0].covers(Duration::from_secs(6)));
        assert!(!m.outage[0].covers(Duration::from_millis(7500)));
        assert_eq!(m.error_rate, 0.1);
    }

    #[test]
    fn defaults_match_the_help() {
        let m = Cli::try_parse_from(["mock"]).unwrap().mock;
        assert_eq!(m.listen.port(), 8080);
        assert_eq!(m.keys, vec![DEFAULT_KEY]);
        assert_eq!(m.retry_after, RetryAfterStyle::Both);
        let d = MockConfig::default();
        assert_eq!(m.batch_speed, d.batch_speed);
        assert_eq!(m.batch_expire_after, d.batch_expire_after);
        assert_eq!(m.batch_phase, d.batch_phase);
        assert_eq!(m.batch_line_error_rate, d.batch_line_error_rate);
        assert_eq!(m.batch_token_limit, d.batch_token_limit);
    }

    #[test]
    fn batch_flags_are_documented() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--batch-speed",
            "--batch-line-error-rate",
            "--batch-expire-after",
            "--batch-token-limit",
            "--batch-phase",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        if std::env::var_os("PRINT_HELP").is_some() {
            println!("{help}");
        }
    }

    #[test]
    fn batch_flags_parse() {
        let m = Cli::try_parse_from([
            "mock",
            "--batch-speed",
            "2.5",
            "--batch-line-error-rate",
            "0.1",
            "--batch-expire-after",
            "0.5",
            "--batch-token-limit",
            "9000",
            "--batch-phase",
            "10",
        ])
        .unwrap()
        .mock;
        assert_eq!(m.batch_speed, 2.5);
        assert_eq!(m.batch_line_error_rate, 0.1);
        assert_eq!(m.batch_expire_after, Duration::from_millis(500));
        assert_eq!(m.batch_token_limit, Some(9000));
        assert_eq!(m.batch_phase, 10);
        for bad in [
            ["--batch-speed", "0"],
            ["--batch-expire-after", "0"],
            ["--batch-line-error-rate", "2"],
            ["--batch-token-limit", "0"],
        ] {
            assert!(
                Cli::try_parse_from(["mock", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["mock", "--error-rate", "1.5"]).is_err());
        assert!(
            Cli::try_parse_from(["mock", "--burst", "5"]).is_err(),
            "--burst needs --rpm"
        );
        assert!(Cli::try_parse_from(["mock", "--outage", "5"]).is_err());
        assert!(Cli::try_parse_from(["mock", "--rpm", "0"]).is_err());
        assert!(Cli::try_parse_from(["mock", "--window", "0"]).is_err());
        assert!(Cli::try_parse_from(["mock", "--window", "61"]).is_err());
        assert!(Cli::try_parse_from(["mock", "--charge", "bytes"]).is_err());
        let both = Cli::try_parse_from(["mock", "--rpm", "60", "--burst", "5", "--window", "1"]);
        let err = both
            .err()
            .expect("--window and --burst together are refused");
        assert!(err.to_string().contains("--window"), "{err}");
    }

    #[test]
    fn window_and_charge_parse() {
        let m = Cli::try_parse_from([
            "mock", "--tpm", "6000", "--window", "0.5", "--charge", "chars",
        ])
        .unwrap()
        .mock;
        assert_eq!(m.window, Some(Duration::from_millis(500)));
        assert_eq!(m.charge, ChargeMode::Chars);
        let m = Cli::try_parse_from(["mock"]).unwrap().mock;
        assert_eq!((m.window, m.charge), (None, ChargeMode::Tokens));
    }
}
