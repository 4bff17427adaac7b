use std::path::PathBuf;
use std::time::Duration;

use super::batch::Via;
use crate::cost::PriceTable;
use crate::input::SourceOptions;
pub use crate::limit::Limits;
use crate::retry::RetryPolicy;
use crate::transport::TransportConfig;

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
    /// One request at a time (live), or through the providers' batch APIs.
    pub via: Via,
    /// The provider was started for this run (the built-in simulator):
    /// nothing an earlier run sent can be there, so batches recorded as
    /// sent are forgotten and their requests sent again.
    pub fresh_provider: bool,
    /// Rate limits shared through Redis with every process on the same
    /// upstream and key (`--redis`).
    pub shared: Option<std::sync::Arc<crate::shared::SharedLimits>>,
    /// Run as one worker of a shared job in Redis (`--redis` with `--job`).
    pub job: Option<super::JobConfig>,
}

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
            via: Via::Live,
            fresh_provider: false,
            shared: None,
            job: None,
        }
    }
}
