use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::{sleep_until, Instant};

/// One gate shared by every worker: after a 429, nobody sends until the
/// provider's wait is over.
///
/// The end of the pause is one atomic: nanoseconds after the gate's creation
/// (zero: never paused). Checking an open gate is a load and a clock read; a
/// pause only ever extends (`fetch_max`), so two workers reporting two 429s
/// keep the later end, and a waiter re-checks after waking in case the pause
/// was extended while it slept.
#[derive(Debug)]
pub struct PauseGate {
    origin: Instant,
    until_nanos: AtomicU64,
}

impl Default for PauseGate {
    fn default() -> Self {
        Self::new()
    }
}

impl PauseGate {
    pub fn new() -> Self {
        PauseGate {
            origin: Instant::now(),
            until_nanos: AtomicU64::new(0),
        }
    }

    /// Closes the gate until `at`, unless it is already closed until later.
    pub fn pause_until(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.until_nanos.fetch_max(nanos, Ordering::AcqRel);
    }

    /// The end of the pause in force at `now`, if any.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        let nanos = self.until_nanos.load(Ordering::Acquire);
        if nanos == 0 {
            return None;
        }
        let until = self
            .origin
            .checked_add(std::time::Duration::from_nanos(nanos))?;
        (until > now).then_some(until)
    }

    /// Returns at once when the gate is open, else when the pause (however
    /// often extended meanwhile) is over.
    pub async fn wait(&self) {
        while let Some(until) = self.paused_until(Instant::now()) {
            sleep_until(until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_gate_does_not_wait() {
        let g = PauseGate::new();
        let start = Instant::now();
        assert_eq!(g.paused_until(start), None);
        g.wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // A pause in the past is no pause.
        g.pause_until(start);
        assert_eq!(g.paused_until(start), None);
        g.wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_waiter_until_its_end() {
        let g = Arc::new(PauseGate::new());
        let start = Instant::now();
        g.pause_until(start + secs(5));
        assert_eq!(g.paused_until(start), Some(start + secs(5)));
        assert_eq!(g.paused_until(start + secs(5)), None);
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move {
                    g.wait().await;
                    Instant::now()
                })
            })
            .collect();
        for w in waiters {
            assert_eq!(w.await.unwrap(), start + secs(5));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_only_extend_and_an_extension_is_honoured() {
        let g = Arc::new(PauseGate::new());
        let start = Instant::now();
        g.pause_until(start + secs(2));
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move {
                g.wait().await;
                Instant::now()
            })
        };
        tokio::time::sleep(secs(1)).await;
        g.pause_until(start + secs(7));
        g.pause_until(start + secs(3)); // shorter: ignored
        assert_eq!(g.paused_until(Instant::now()), Some(start + secs(7)));
        assert_eq!(waiter.await.unwrap(), start + secs(7));
        g.wait().await;
        assert_eq!(Instant::now(), start + secs(7));
    }
}
