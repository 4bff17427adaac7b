//! Shared limits: many pacer processes, on many machines, keeping one
//! provider's limits together through Redis (`--redis URL`).
//!
//! A provider limits an account (a key), not a process. Three `pacer run`s
//! each pacing itself to 600 requests a minute send 1,800 and meet a wall of
//! 429s. So every process that talks to the same upstream origin with the
//! same key keeps its rate limits in one place, Redis, under a **scope**: the
//! blake3 fingerprint of the origin and the key together ([`Scope`]). The key
//! itself never leaves the process; the fingerprint alone does not reveal
//! it, and mixed with the origin it does not even say which key is used
//! elsewhere.
//!
//! **GCRA on Redis `TIME`.** The limits are the same leaky buckets the local
//! pacer uses ([`crate::limit::Gcra`]), kept as one theoretical arrival time
//! per bucket (requests and tokens) in Redis. One Lua script (`admit.lua`,
//! run as EVALSHA) reads Redis's own clock, checks the shared pause, and
//! reserves one request and the request's estimated tokens at the earliest
//! instant both buckets allow, atomically. It hands back the wait until that
//! instant: the process sleeps it and sends. A paced request therefore costs
//! one round trip, whatever the contention, and no process reads its own
//! clock for any limit: clock skew between machines changes nothing.
//! Continuous buckets have no window edges to burst through.
//!
//! **Reservation and settlement.** Tokens are reserved before the request
//! (counted only after the answer, a flight of requests overshoots the token
//! limit), then settled with the real usage by a second script
//! (`settle.lua`): a refund or an extra charge on the token bucket, and, for
//! a 429, the pause every process then honours until its Retry-After. That
//! second round trip is spent only when there is something to settle: at
//! most two a request.
//!
//! **Limits.** Each process passes its configured ceilings and the latest
//! limits its provider's headers showed; the script keeps the latest reading
//! for everyone and applies the tighter of it and the process's own ceiling.
//! Limits learned from 429s alone (AIMD) stay local: one process's goodput is
//! only its share, and publishing it would cut everyone to one share.
//!
//! **Fail safe, not open.** When Redis stops answering, a process never goes
//! on at the full limit (that is the limit times the replicas). It paces at
//! its **local share**: the shared limit divided by the workers last seen
//! alive (a sorted set of heartbeats on Redis's clock), its bucket starting
//! empty ([`local_share`]), under the local limits that always apply. A
//! background task tries Redis every second; when it answers, shared pacing
//! resumes, and buckets Redis lost (a restart) start empty rather than full.
//! Nothing is queued in Redis, so nothing is lost with it.

mod error;
mod limits;
mod reply;
mod scope;

pub use error::SharedError;
pub use limits::{Seen, SharedLimits, SharedTicket, Snapshot};
pub use reply::{local_share, AdmitReply, Share};
pub use scope::{check_url, display_redis_url, Scope};
