use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use tokio::time::{sleep, Instant};

use super::reply::{local_share, AdmitReply, RawAdmit, Share};
use super::{display_redis_url, Scope, SharedError};
use crate::limit::{Limits, RateLimiter};

/// How long one Redis call may take before Redis counts as away (a round
/// trip on a network is a millisecond or less).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the background task says the worker is alive, or, with Redis
/// away, tries it again.
const TICK: Duration = Duration::from_secs(1);
/// The furthest ahead a place in line is reserved. Further than this (a
/// pause, a token debt), nothing is reserved and the script is asked again
/// a little before.
const MAX_RESERVE_AHEAD: Duration = Duration::from_secs(2);
/// The longest sleep between two asks while refused.
const MAX_REFUSED_SLEEP: Duration = Duration::from_secs(5);
/// The share of a provider's bucket (as its headers show it) that the
/// processes spend at once. A place in line is used a moment after it is
/// reserved, later on a loaded machine: a burst used late and the burst the
/// others reserve after it (the bucket refilled meanwhile, on Redis's
/// books) reach the provider together, and must fit in its one bucket.
const SEEN_BURST_SHARE: f64 = 0.5;
/// With no limit anywhere (no flag, no header reading by any process) and
/// no pause, Redis has nothing to reserve: an admission only learns that
/// nothing changed. For this long after such an answer, admissions go
/// without a round trip (it would otherwise cap a process at one
/// admission a round trip); a pause or a limit published meanwhile is seen
/// this much later.
const UNLIMITED_RECHECK: Duration = Duration::from_millis(100);
/// The environment variable that offsets this process's wall clock, for the
/// clock-skew test: milliseconds, may be negative.
const SKEW_ENV: &str = "PACER_TEST_CLOCK_SKEW_MS";

/// Limits a process read from its provider's headers, to share with the
/// others: units a minute and the bucket's size.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seen {
    pub requests: Option<Share>,
    pub tokens: Option<Share>,
}

/// What an admission reserved in Redis, to settle after the answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedTicket {
    /// The token limit the reservation was made under, if any.
    pub tokens: Option<Share>,
}

/// The state of the shared limits, for progress and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Pacing through Redis (else at the local share).
    pub shared: bool,
    /// Workers last seen alive.
    pub workers: u32,
    pub requests: Option<Share>,
    pub tokens: Option<Share>,
}

/// The handle every admission of a process goes through when `--redis` is
/// set: see the module doc. Cheap to share (`Arc`); no lock is held across
/// an await (the connection is cloned out of its lock).
pub struct SharedLimits {
    scope: Scope,
    /// A random id for this process's heartbeats.
    worker: String,
    /// The URL without its password, for messages.
    url: String,
    client: Client,
    configured: Seen,
    admit: Script,
    settle: Script,
    heartbeat: Script,
    /// `None` while Redis is away.
    conn: Mutex<Option<MultiplexedConnection>>,
    state: Mutex<State>,
    skew_ms: i64,
    /// Set once this process has warned about Redis being away (one warning
    /// an outage).
    warned: AtomicBool,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("url", &self.url)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    /// The last answer from Redis: workers alive and the limits in force.
    workers: u32,
    requests: Option<Share>,
    tokens: Option<Share>,
    /// While Redis is away: this process's share.
    fallback: Option<Fallback>,
    /// Redis was away since this process's last admission: buckets it
    /// lost start empty.
    resume: bool,
    /// Until then, Redis said there is no limit and no pause: admissions
    /// go without asking it (see [`UNLIMITED_RECHECK`]).
    free_until: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Fallback {
    requests: Option<Arc<RateLimiter>>,
    tokens: Option<Arc<RateLimiter>>,
}

impl SharedLimits {
    /// Connects to Redis at `url`, says this worker is alive, and starts the
    /// background heartbeat. Fails (one sentence) if Redis does not answer:
    /// a run that asked to share limits does not start without them.
    pub async fn connect(
        url: &str,
        scope: Scope,
        limits: &Limits,
    ) -> Result<Arc<SharedLimits>, SharedError> {
        super::check_url(url)?;
        let shown = display_redis_url(url);
        let client = Client::open(url).map_err(|e| SharedError::InvalidUrl {
            url: shown.clone(),
            reason: redis_cause(&e),
        })?;
        let shared = Arc::new(SharedLimits {
            scope,
            worker: worker_id(),
            url: shown.clone(),
            client,
            configured: configured(limits),
            admit: Script::new(include_str!("admit.lua")),
            settle: Script::new(include_str!("settle.lua")),
            heartbeat: Script::new(include_str!("heartbeat.lua")),
            conn: Mutex::new(None),
            state: Mutex::new(State {
                workers: 1,
                requests: None,
                tokens: None,
                fallback: None,
                resume: false,
                free_until: None,
            }),
            skew_ms: skew_from_env(),
            warned: AtomicBool::new(false),
        });
        let conn = shared.open().await.map_err(|e| SharedError::Unreachable {
            url: shown.clone(),
            cause: redis_cause(&e),
        })?;
        shared
            .beat(conn.clone())
            .await
            .map_err(|e| SharedError::Unreachable {
                url: shown,
                cause: redis_cause(&e),
            })?;
        *lock(&shared.conn) = Some(conn);
        let weak = Arc::downgrade(&shared);
        tokio::spawn(background(weak));
        Ok(shared)
    }

    /// Where the limits are kept, for messages: the URL without a password.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Waits until one request of `tokens` (in the provider's terms) may go
    /// under the shared limits, and reserves it. `seen` is what this
    /// process's headers say the limits are. With Redis away, it waits on
    /// this process's local share instead, and reserves nothing in Redis.
    pub async fn admit(&self, seen: Seen, tokens: u64) -> Option<SharedTicket> {
        // Bounded: each turn sleeps (a refusal, or the local share), and
        // Redis failing moves to the local share for good this admission.
        let nothing_seen = seen.requests.is_none() && seen.tokens.is_none();
        if nothing_seen
            && lock(&self.state)
                .free_until
                .is_some_and(|t| Instant::now() < t)
        {
            return Some(SharedTicket { tokens: None });
        }
        loop {
            let conn = lock(&self.conn).clone();
            let Some(conn) = conn else {
                self.admit_locally(tokens).await;
                return None;
            };
            match self.ask(conn, seen, tokens).await {
                Ok(reply) => {
                    self.adopt(&reply);
                    let unlimited = reply.granted
                        && reply.wait.is_zero()
                        && reply.requests.is_none()
                        && reply.tokens.is_none()
                        && self.configured == Seen::default();
                    lock(&self.state).free_until =
                        (unlimited && nothing_seen).then(|| Instant::now() + UNLIMITED_RECHECK);
                    if reply.granted {
                        sleep(reply.wait).await;
                        return Some(SharedTicket {
                            tokens: reply.tokens,
                        });
                    }
                    // Ask again a little before the place could be reserved.
                    let wait = reply.wait.saturating_sub(MAX_RESERVE_AHEAD / 2);
                    sleep(wait.clamp(Duration::from_millis(1), MAX_REFUSED_SLEEP)).await;
                }
                Err(e) => self.fall_back(&e),
            }
        }
    }

    /// Settles a reservation after the answer: `token_delta` tokens used
    /// beyond (or, negative, short of) what was reserved, and a 429's
    /// `pause` for everyone. In the background; a failure only costs
    /// precision (the reservation stands).
    pub fn settle(
        self: &Arc<Self>,
        ticket: Option<&SharedTicket>,
        token_delta: i64,
        pause: Option<Duration>,
    ) {
        let tokens = ticket.and_then(|t| t.tokens).filter(|_| token_delta != 0);
        let pause_us = pause.map_or(0, |p| u64::try_from(p.as_micros()).unwrap_or(u64::MAX));
        if tokens.is_none() && pause_us == 0 {
            return;
        }
        if pause_us > 0 {
            // A 429: ask Redis again from the next admission on.
            lock(&self.state).free_until = None;
        }
        let Some(conn) = lock(&self.conn).clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.clone();
        runtime.spawn(async move {
            let (tpm, burst) = tokens.map_or((0.0, 1.0), |s| (s.per_minute, s.burst));
            let mut conn = conn;
            let r: redis::RedisResult<i64> = me
                .settle
                .key(me.scope.key("ttat"))
                .key(me.scope.key("pause"))
                .arg(if tokens.is_some() { token_delta } else { 0 })
                .arg(tpm)
                .arg(burst)
                .arg(pause_us)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = r {
                me.fall_back(&e);
            }
        });
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        let s = lock(&self.state);
        Snapshot {
            shared: s.fallback.is_none(),
            workers: s.workers,
            requests: s.requests,
            tokens: s.tokens,
        }
    }

    async fn ask(
        &self,
        mut conn: MultiplexedConnection,
        seen: Seen,
        tokens: u64,
    ) -> redis::RedisResult<AdmitReply> {
        let resume = lock(&self.state).resume;
        let c = self.configured;
        let (cr, cb) = parts(c.requests);
        let (ct, ctb) = parts(c.tokens);
        let margin = |s: Option<Share>| {
            s.map(|s| Share {
                burst: (s.burst * SEEN_BURST_SHARE).max(1.0),
                ..s
            })
        };
        let (sr, sb) = parts(margin(seen.requests));
        let (st, stb) = parts(margin(seen.tokens));
        let raw: RawAdmit = self
            .admit
            .key(self.scope.key("rtat"))
            .key(self.scope.key("ttat"))
            .key(self.scope.key("pause"))
            .key(self.scope.key("limits"))
            .key(self.scope.key("alive"))
            .arg(&self.worker)
            .arg(tokens)
            .arg(cr)
            .arg(cb)
            .arg(ct)
            .arg(ctb)
            .arg(sr)
            .arg(sb)
            .arg(st)
            .arg(stb)
            .arg(u8::from(resume))
            .arg(u64::try_from(MAX_RESERVE_AHEAD.as_micros()).unwrap_or(u64::MAX))
            .invoke_async(&mut conn)
            .await?;
        Ok(AdmitReply::from_raw(&raw))
    }

    /// Takes the last word from Redis: workers alive and the limits in force.
    fn adopt(&self, reply: &AdmitReply) {
        let mut s = lock(&self.state);
        s.workers = reply.workers;
        s.requests = reply.requests;
        s.tokens = reply.tokens;
        s.resume = false;
    }

    /// Redis failed: from now on, until the background task reaches it
    /// again, this process paces at its local share, its buckets empty.
    fn fall_back(&self, e: &redis::RedisError) {
        let was = lock(&self.conn).take();
        let mut s = lock(&self.state);
        if s.fallback.is_none() {
            let now = Instant::now();
            let workers = s.workers;
            let limiter = |limit: Option<Share>| {
                limit.map(|l| {
                    let share = local_share(l, workers);
                    let l = Arc::new(RateLimiter::new(share.per_minute / 60.0, share.burst));
                    // Empty: the provider's bucket may be too.
                    l.observe_remaining(now, 0, Duration::from_secs(1));
                    l
                })
            };
            s.fallback = Some(Fallback {
                requests: limiter(s.requests),
                tokens: limiter(s.tokens),
            });
            s.resume = true;
            drop(s);
            if was.is_some() && !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "Redis at {} is not answering ({}): pacing at this process's share (1/{workers} of the limit) until it is back",
                    self.url,
                    redis_cause(e)
                );
            }
        }
    }

    async fn admit_locally(&self, tokens: u64) {
        let fallback = lock(&self.state).fallback.clone();
        let Some(f) = fallback else {
            return;
        };
        if let Some(l) = &f.requests {
            l.acquire(1).await;
        }
        if let Some(l) = &f.tokens {
            l.acquire(tokens).await;
        }
    }

    async fn open(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Says this worker is alive; learns how many are.
    async fn beat(&self, mut conn: MultiplexedConnection) -> redis::RedisResult<()> {
        let (alive, _skew): (i64, i64) = self
            .heartbeat
            .key(self.scope.key("alive"))
            .key(self.scope.key("clock"))
            .arg(&self.worker)
            .arg(self.wall_clock_ms())
            .invoke_async(&mut conn)
            .await?;
        lock(&self.state).workers = super::reply::workers(alive);
        Ok(())
    }

    /// One background turn: a heartbeat, or, with Redis away, a try to
    /// reach it again.
    async fn tick(&self) {
        let conn = lock(&self.conn).clone();
        match conn {
            Some(conn) => {
                if let Err(e) = self.beat(conn).await {
                    self.fall_back(&e);
                }
            }
            None => {
                let Ok(conn) = self.open().await else {
                    return;
                };
                if self.beat(conn.clone()).await.is_err() {
                    return;
                }
                *lock(&self.conn) = Some(conn);
                lock(&self.state).fallback = None;
                if self.warned.swap(false, Ordering::Relaxed) {
                    tracing::warn!("Redis at {} answers again: shared limits resumed", self.url);
                }
            }
        }
    }

    /// This process's wall clock (offset by the test hook). Only heartbeats
    /// carry it, to show the offset; no limit reads it.
    fn wall_clock_ms(&self) -> i64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        ms.saturating_add(self.skew_ms)
    }
}

async fn background(weak: Weak<SharedLimits>) {
    loop {
        sleep(TICK).await;
        let Some(shared) = weak.upgrade() else {
            return;
        };
        shared.tick().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update is whole between statements that can panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parts(share: Option<Share>) -> (f64, f64) {
    share.map_or((0.0, 0.0), |s| (s.per_minute, s.burst))
}

/// The configured ceilings as shared limits: `--rps` folds into the
/// request bucket (a minute's rate and a second's burst).
fn configured(limits: &Limits) -> Seen {
    let rpm = limits.rpm.map(|pm| Share {
        per_minute: pm,
        burst: limits.burst.unwrap_or(pm).max(1.0),
    });
    let rps = limits.rps.map(|ps| Share {
        per_minute: ps * 60.0,
        burst: ps.max(1.0),
    });
    let requests = match (rpm, rps) {
        (Some(a), Some(b)) => Some(Share {
            per_minute: a.per_minute.min(b.per_minute),
            burst: a.burst.min(b.burst),
        }),
        (a, b) => a.or(b),
    };
    Seen {
        requests,
        tokens: limits.tpm.map(|pm| Share {
            per_minute: pm,
            burst: pm.max(1.0),
        }),
    }
}

fn worker_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{}-{n:032x}", std::process::id())
}

fn skew_from_env() -> i64 {
    std::env::var(SKEW_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(0, |ms| ms.clamp(-86_400_000 * 365, 86_400_000 * 365))
}

/// A Redis error in a few words (its text never holds the URL's password:
/// the client does not echo it).
fn redis_cause(e: &redis::RedisError) -> String {
    let text = e.to_string();
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_ceilings_fold_rps_into_the_request_bucket() {
        let c = configured(&Limits {
            rpm: Some(600.0),
            rps: Some(5.0),
            tpm: Some(1000.0),
            ..Limits::default()
        });
        assert_eq!(
            c.requests,
            Some(Share {
                per_minute: 300.0,
                burst: 5.0
            })
        );
        assert_eq!(c.tokens.map(|t| t.burst), Some(1000.0));
        assert_eq!(configured(&Limits::default()), Seen::default());
        let c = configured(&Limits {
            rpm: Some(60.0),
            burst: Some(3.0),
            ..Limits::default()
        });
        assert_eq!(c.requests.map(|r| r.burst), Some(3.0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_share_starts_empty_and_paces_at_the_share() {
        // The limiter fall_back builds: 600/min among 3 workers, bucket 10.
        let share = local_share(
            Share {
                per_minute: 600.0,
                burst: 10.0,
            },
            3,
        );
        let now = Instant::now();
        let l = RateLimiter::new(share.per_minute / 60.0, share.burst);
        l.observe_remaining(now, 0, Duration::from_secs(1));
        for _ in 0..10 {
            l.acquire(1).await;
        }
        // 200 a minute: one every 300 ms, none at once.
        assert_eq!(Instant::now() - now, Duration::from_millis(3000));
    }
}
