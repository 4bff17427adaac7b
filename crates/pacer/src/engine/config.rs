use std::path::PathBuf;
use std::time::Duration;

use crate::cost::PriceTable;
use crate::input::SourceOptions;
use crate::retry::RetryPolicy;
use crate::transport::TransportConfig;

/// Configured limits: hard ceilings. `None` means "learn it from the provider".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<f64>,
    /// Requests per second (for providers that enforce short windows).
    pub rps: Option<f64>,
    /// Tokens per minute (prompt plus `max_tokens` × `n`, as providers charge).
    pub tpm: Option<f64>,
    /// Largest burst, in requests, for `rpm` (default: one minute's worth, the
    /// provider's own bucket size).
    pub burst: Option<f64>,
    /// Requests in flight at once.
    pub concurrency: Option<usize>,
}

/// Everything one `pacer run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub input: PathBuf,
    pub output: PathBuf,
    pub state: PathBuf,
    pub source: SourceOptions,
    pub transport: TransportConfig,
    pub limits: Limits,
    pub retry: RetryPolicy,
    /// A request that keeps failing like an outage is failed for good only after this long.
    pub max_retry_time: Duration,
    /// Throw away the state and the output and start over.
    pub restart: bool,
    /// Stop admitting once spent plus reserved would pass this many USD.
    pub max_cost: Option<f64>,
    pub prices: PriceTable,
    /// After Ctrl-C, how long in-flight requests get to finish.
    pub grace: Duration,
    /// Check the key (`GET /v1/models`) before the first request.
    pub verify: bool,
}

/// Requests in flight when neither `--concurrency` nor a learned pace says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 50;

impl RunConfig {
    /// A configuration with pacer's defaults for `input`, writing `output` with state at `state`.
    pub fn new(input: PathBuf, output: PathBuf, state: PathBuf) -> RunConfig {
        RunConfig {
            input,
            output,
            state,
            source: SourceOptions::default(),
            transport: TransportConfig::default(),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            max_retry_time: Duration::from_secs(30 * 60),
            restart: false,
            max_cost: None,
            prices: PriceTable::builtin(),
            grace: Duration::from_secs(5),
            verify: true,
        }
    }
}
