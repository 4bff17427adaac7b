//! The state every request handler shares.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::batch::BatchStore;
use crate::config::MockConfig;
use crate::faults::FaultPlan;
use crate::limits::{Capacity, RateLimiter};
use crate::stats::{Recorder, Stats};

/// Built once at start; everything mutable inside is an atomic or a short
/// mutex section, so handlers never wait on each other across an `.await`.
pub(crate) struct MockState {
    pub config: MockConfig,
    /// Server start on tokio's clock (outages and the log are measured from it).
    pub started: Instant,
    /// Accepted key → its index in `config.keys`.
    pub keys: HashMap<String, usize>,
    pub limiter: RateLimiter,
    pub recorder: Recorder,
    pub faults: FaultPlan,
    /// Files and batches (OpenAI's and Anthropic's batch APIs).
    pub batches: BatchStore,
    /// The next request's arrival number.
    pub seq: AtomicU64,
    /// Flips to `true` on shutdown, so hung requests let the server stop.
    pub shutdown: watch::Sender<bool>,
}

impl MockState {
    pub fn new(mut config: MockConfig) -> Self {
        // An empty key would let `Authorization: Bearer ` in.
        config.keys.retain(|k| !k.trim().is_empty());
        let started = Instant::now();
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect();
        let faults = FaultPlan::new(&config);
        MockState {
            batches: BatchStore::new(&config, started, faults.seed()),
            limiter: RateLimiter::new(
                &config.keys,
                config.rpm,
                config.tpm,
                Capacity::of(config.burst, config.window),
                started,
            ),
            recorder: Recorder::new(&config.keys),
            faults,
            keys,
            started,
            seq: AtomicU64::new(0),
            shutdown: watch::Sender::new(false),
            config,
        }
    }
}

impl MockState {
    /// The counters, batches brought up to now.
    pub fn stats(&self) -> Stats {
        let mut stats = self.recorder.stats();
        self.batches.fill_stats(&mut stats);
        stats
    }
}
