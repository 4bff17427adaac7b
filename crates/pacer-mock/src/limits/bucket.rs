//! One continuously refilling bucket.

use std::time::Duration;
use tokio::time::Instant;

/// A bucket of `capacity` units that refills at `per_minute / 60` units per second.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_minute: u64,
    capacity: f64,
    per_sec: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket for a `per_minute` limit holding at most `capacity` units.
    pub fn new(per_minute: u64, capacity: u64, now: Instant) -> Self {
        let capacity = capacity.clamp(1, per_minute.max(1)) as f64;
        Bucket {
            per_minute,
            capacity,
            per_sec: per_minute as f64 / 60.0,
            level: capacity,
            last: now,
        }
    }

    /// The configured per-minute limit (what `*-limit` headers report).
    pub fn limit(&self) -> u64 {
        self.per_minute
    }

    /// The most the bucket can ever hold.
    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    /// Bring the level up to `now`.
    pub fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + elapsed * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// How long until `cost` units are available (zero when they are now).
    /// Call after [`refill`](Self::refill).
    pub fn wait_for(&self, cost: u64) -> Duration {
        let missing = cost as f64 - self.level;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_sec)
        }
    }

    /// Spend `cost` units (the caller checked [`wait_for`](Self::wait_for)).
    pub fn take(&mut self, cost: u64) {
        self.level -= cost as f64;
    }

    /// Whole units available now.
    pub fn remaining(&self) -> u64 {
        self.level.max(0.0).floor() as u64
    }

    /// Units used and not yet refilled.
    pub fn used(&self) -> u64 {
        (self.capacity - self.level).max(0.0).ceil() as u64
    }

    /// How long until the bucket is full again (OpenAI's "reset").
    pub fn until_full(&self) -> Duration {
        let missing = self.capacity - self.level;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_continuously_up_to_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::new(60, 60, t0);
        for _ in 0..60 {
            assert_eq!(b.wait_for(1), Duration::ZERO);
            b.take(1);
        }
        assert_eq!(b.remaining(), 0);
        assert_eq!(b.wait_for(1), Duration::from_secs(1));
        assert_eq!(b.until_full(), Duration::from_secs(60));
        b.refill(t0 + Duration::from_millis(2500));
        assert_eq!(b.remaining(), 2);
        assert_eq!(b.wait_for(3), Duration::from_millis(500));
        b.refill(t0 + Duration::from_secs(3600));
        assert_eq!(b.remaining(), 60, "never above capacity");
    }

    #[test]
    fn burst_caps_capacity_but_not_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(600, 5, t0);
        assert_eq!(b.capacity(), 5);
        b.take(5);
        b.refill(t0 + Duration::from_millis(100));
        assert_eq!(b.remaining(), 1);
        assert_eq!(b.limit(), 600);
    }
}
