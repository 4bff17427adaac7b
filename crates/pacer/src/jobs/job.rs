use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, FromRedisValue, Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::keys::{Keys, GROUP};
use super::{JobError, JobName};
use crate::shared::display_redis_url;
use crate::store::{JobStore, PendingCursor, PendingRow, RequestState};

/// How long one Redis call may take before Redis counts as away.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests written to Redis a round trip while loading.
const LOAD_CHUNK: usize = 1000;
/// The loader's lock lives this long unless renewed (a loader that dies
/// lets another take over after it).
const LOADER_TTL: Duration = Duration::from_secs(30);
/// The longest a joiner waits for another process to finish loading.
const LOAD_WAIT: Duration = Duration::from_secs(600);
/// A finished job's keys stay this long (for `status` and `export`, and
/// for the runs that joined it to write their output).
pub const KEEP_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest request body a worker takes from Redis: Redis is shared, so
/// what it hands over is checked like anything else from the network.
const MAX_BODY_BYTES: usize = 64 << 20;
/// A request handed out more often than this without an answer (its
/// workers died or stalled past their leases) is failed with its last error.
pub const MAX_DELIVERIES: u32 = 5;

/// A request as a shared job keeps it (short keys: one per request).
#[derive(Debug, Serialize, Deserialize)]
struct StoredRequest {
    c: String,
    u: String,
    b: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<String>,
    p: u64,
    o: u64,
    r: i64,
}

/// A request's result as a shared job keeps it until every run that joined
/// has written it to its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    /// 2 done, 3 failed (as [`RequestState`]).
    pub s: u8,
    /// The output line.
    pub l: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<f64>,
}

impl StoredResult {
    pub fn state(&self) -> RequestState {
        if self.s == 3 {
            RequestState::Failed
        } else {
            RequestState::Done
        }
    }

    /// The local store's command that records this result for request `idx`.
    pub fn into_finish(self, idx: i64) -> crate::store::Command {
        crate::store::Command::Finish {
            idx,
            state: self.state(),
            line: self.l,
            error: self.e,
            prompt_tokens: self.p,
            cached_tokens: self.k,
            completion_tokens: self.c,
            cost_usd: self.u,
        }
    }
}

/// What a shared job's meta says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobFacts {
    pub name: String,
    pub total: u64,
    pub finished: u64,
    pub failed: u64,
    /// Taken by a worker and not finished (its lease may have run out).
    pub in_flight: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Why the job is stopped, if it is.
    pub stop: Option<String>,
}

impl JobFacts {
    pub fn done(&self) -> bool {
        self.finished >= self.total
    }
}

/// One request handed to this worker by [`SharedJob::take`].
#[derive(Debug)]
pub(crate) struct TakenEntry {
    pub entry: String,
    pub row: PendingRow,
    /// Set when it was handed out more than [`MAX_DELIVERIES`] times: its
    /// last error, to fail it with.
    pub exhausted: Option<String>,
}

/// What one take brought.
#[derive(Debug)]
pub(crate) struct TakeReply {
    pub total: i64,
    pub finished: u64,
    pub stop: Option<String>,
    pub entries: Vec<TakenEntry>,
}

/// One result for [`SharedJob::finish`].
#[derive(Debug)]
pub(crate) struct Finished {
    pub idx: i64,
    /// The stream entry it was handed out as ('' if this worker no longer knows).
    pub entry: String,
    pub result: StoredResult,
}

/// A shared job in Redis: the requests, the stream they are handed out
/// through, the results and the job's facts. See the module doc.
pub struct SharedJob {
    name: JobName,
    keys: Keys,
    url: String,
    conn: ConnectionManager,
    consumer: String,
    lease: Duration,
    take: Script,
    finish: Script,
    release: Script,
    renew: Script,
}

impl std::fmt::Debug for SharedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedJob")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SharedJob {
    /// Connects to the job `name` in Redis at `url` (not yet loading or
    /// joining it). `lease`: how long a request taken by a worker that stops
    /// renewing it stays its own.
    pub async fn connect(url: &str, name: JobName, lease: Duration) -> Result<SharedJob, JobError> {
        let shown = display_redis_url(url);
        crate::shared::check_url(url).map_err(|e| JobError::Unreachable {
            url: shown.clone(),
            cause: e.to_string(),
        })?;
        let unreachable = |e: redis::RedisError| JobError::Unreachable {
            url: shown.clone(),
            cause: e.to_string().chars().take(200).collect(),
        };
        let client = Client::open(url).map_err(unreachable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unreachable)?;
        Ok(SharedJob {
            keys: Keys::new(&name),
            name,
            url: shown,
            conn,
            consumer: consumer_id(),
            lease,
            take: Script::new(include_str!("take.lua")),
            finish: Script::new(include_str!("finish.lua")),
            release: Script::new(include_str!("release.lua")),
            renew: Script::new(include_str!("renew.lua")),
        })
    }

    pub fn name(&self) -> &JobName {
        &self.name
    }

    /// The Redis URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn unreachable(&self, e: redis::RedisError) -> JobError {
        JobError::Unreachable {
            url: self.url.clone(),
            cause: e.to_string().chars().take(200).collect(),
        }
    }

    fn corrupt(&self, what: impl Into<String>) -> JobError {
        JobError::Corrupt {
            name: self.name.to_string(),
            url: self.url.clone(),
            what: what.into(),
        }
    }

    /// Loads the pending requests of the job's local state (`state`, made
    /// from the input by the usual validated import) into Redis, unless the
    /// job is loaded already: then it joins, if it was loaded from the same
    /// input (`fingerprint`). Waits while another process loads it. Returns
    /// whether this process loaded it.
    pub async fn load_or_join(&self, fingerprint: &str, state: &Path) -> Result<bool, JobError> {
        let waited = tokio::time::Instant::now();
        loop {
            let mut c = self.conn.clone();
            let (status, theirs): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(&self.keys.meta)
                .arg("state")
                .arg("fingerprint")
                .query_async(&mut c)
                .await
                .map_err(|e| self.unreachable(e))?;
            if status.as_deref() == Some("ready") {
                let theirs = theirs.unwrap_or_default();
                if theirs != fingerprint {
                    return Err(JobError::OtherInput {
                        name: self.name.to_string(),
                        url: self.url.clone(),
                        theirs,
                        ours: fingerprint.to_string(),
                    });
                }
                return Ok(false);
            }
            let locked: Option<String> = redis::cmd("SET")
                .arg(&self.keys.loader)
                .arg(&self.consumer)
                .arg("NX")
                .arg("PX")
                .arg(LOADER_TTL.as_millis() as u64)
                .query_async(&mut c)
                .await
                .map_err(|e| self.unreachable(e))?;
            if locked.is_some() {
                // A job left half loaded by a loader that died is loaded anew.
                let status: Option<String> = c
                    .hget(&self.keys.meta, "state")
                    .await
                    .map_err(|e| self.unreachable(e))?;
                if status.as_deref() != Some("ready") {
                    self.load(fingerprint, state).await?;
                    let _: () = c
                        .del(&self.keys.loader)
                        .await
                        .map_err(|e| self.unreachable(e))?;
                    return Ok(true);
                }
                let _: () = c
                    .del(&self.keys.loader)
                    .await
                    .map_err(|e| self.unreachable(e))?;
                continue;
            }
            if waited.elapsed() > LOAD_WAIT {
                return Err(JobError::LoadTimedOut {
                    name: self.name.to_string(),
                    url: self.url.clone(),
                    waited_s: LOAD_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn load(&self, fingerprint: &str, state: &Path) -> Result<(), JobError> {
        let mut c = self.conn.clone();
        let mut wipe = redis::pipe();
        for k in self.keys.all() {
            wipe.del(k).ignore();
        }
        wipe.hset_multiple(
            &self.keys.meta,
            &[("state", "loading"), ("fingerprint", fingerprint)],
        )
        .ignore();
        wipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.work)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .ignore();
        let _: () = wipe
            .query_async(&mut c)
            .await
            .map_err(|e| self.unreachable(e))?;

        // Pages of the local state, read on a blocking thread, written to
        // Redis a pipeline a page, in scheduler order.
        let (tx, mut rx) = mpsc::channel::<Result<Vec<PendingRow>, JobError>>(2);
        let path = state.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let store = match JobStore::open_read_only(&path) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            let mut after: Option<PendingCursor> = None;
            loop {
                let page = store.fetch_pending(after, LOAD_CHUNK);
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e.into()));
                        return;
                    }
                };
                let last = page.len() < LOAD_CHUNK;
                after = page.last().map(|r| PendingCursor {
                    priority: r.priority,
                    idx: r.idx,
                });
                if (!page.is_empty() && tx.blocking_send(Ok(page)).is_err()) || last {
                    return;
                }
            }
        });
        let mut total: u64 = 0;
        while let Some(page) = rx.recv().await {
            let page = page?;
            let mut p = redis::pipe();
            for row in &page {
                let stored = StoredRequest {
                    c: row.custom_id.clone(),
                    u: row.url.clone(),
                    b: row.body.clone(),
                    m: row.model.clone(),
                    p: row.est_prompt,
                    o: row.est_output,
                    r: row.priority,
                };
                let json = serde_json::to_string(&stored)
                    .map_err(|e| self.corrupt(format!("a request could not be encoded: {e}")))?;
                p.hset(&self.keys.requests, row.idx, json).ignore();
                p.cmd("XADD")
                    .arg(&self.keys.work)
                    .arg("*")
                    .arg("i")
                    .arg(row.idx)
                    .ignore();
            }
            p.pexpire(&self.keys.loader, LOADER_TTL.as_millis() as i64)
                .ignore();
            let _: () = p
                .query_async(&mut c)
                .await
                .map_err(|e| self.unreachable(e))?;
            total += page.len() as u64;
        }
        let _ = reader.await;
        let _: () = redis::pipe()
            .hset_multiple(
                &self.keys.meta,
                &[
                    ("total", total.to_string()),
                    ("finished", "0".into()),
                    ("failed", "0".into()),
                    ("state", "ready".into()),
                ],
            )
            .query_async(&mut c)
            .await
            .map_err(|e| self.unreachable(e))?;
        if total == 0 {
            self.expire_all(&mut c).await?;
        }
        Ok(())
    }

    async fn expire_all(&self, c: &mut ConnectionManager) -> Result<(), JobError> {
        let mut p = redis::pipe();
        for k in self.keys.all() {
            p.expire(k, KEEP_FINISHED.as_secs() as i64).ignore();
        }
        p.query_async(c).await.map_err(|e| self.unreachable(e))
    }

    /// Joins a loaded job from a machine without its input: fails at once
    /// if nobody loaded it, waits (bounded) while it is being loaded.
    pub async fn join(&self) -> Result<JobFacts, JobError> {
        let waited = tokio::time::Instant::now();
        loop {
            let mut c = self.conn.clone();
            let status: Option<String> = c
                .hget(&self.keys.meta, "state")
                .await
                .map_err(|e| self.unreachable(e))?;
            match status.as_deref() {
                Some("ready") => return self.facts().await,
                Some(_) if waited.elapsed() < LOAD_WAIT => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Some(_) => {
                    return Err(JobError::LoadTimedOut {
                        name: self.name.to_string(),
                        url: self.url.clone(),
                        waited_s: LOAD_WAIT.as_secs(),
                    })
                }
                None => {
                    return Err(JobError::NoSuchJob {
                        name: self.name.to_string(),
                        url: self.url.clone(),
                    })
                }
            }
        }
    }

    /// The job's facts as they are now.
    pub async fn facts(&self) -> Result<JobFacts, JobError> {
        let mut c = self.conn.clone();
        let (meta, pending): (Vec<Option<String>>, Value) = redis::pipe()
            .cmd("HMGET")
            .arg(&self.keys.meta)
            .arg(&[
                "state",
                "total",
                "finished",
                "failed",
                "prompt_tokens",
                "completion_tokens",
                "cost_usd",
                "stop",
            ])
            .cmd("XPENDING")
            .arg(&self.keys.work)
            .arg(GROUP)
            .query_async(&mut c)
            .await
            .map_err(|e| self.unreachable(e))?;
        if meta.first().and_then(|s| s.as_deref()).is_none() {
            return Err(JobError::NoSuchJob {
                name: self.name.to_string(),
                url: self.url.clone(),
            });
        }
        let num = |i: usize| {
            meta.get(i)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .unwrap_or(0.0)
        };
        // XPENDING's summary: [count, first, last, consumers]; an error when
        // the group is gone (the job expired meanwhile).
        let in_flight = match &pending {
            Value::Array(items) => items
                .first()
                .and_then(|v| i64::from_redis_value_ref(v).ok())
                .unwrap_or(0)
                .max(0) as u64,
            _ => 0,
        };
        Ok(JobFacts {
            name: self.name.to_string(),
            total: num(1) as u64,
            finished: num(2) as u64,
            failed: num(3) as u64,
            in_flight,
            prompt_tokens: num(4) as u64,
            completion_tokens: num(5) as u64,
            cost_usd: num(6),
            stop: meta.get(7).cloned().flatten(),
        })
    }

    /// Takes up to `count` requests for this worker (expired leases first).
    pub(crate) async fn take(&self, count: usize) -> Result<TakeReply, JobError> {
        let mut c = self.conn.clone();
        let reply: Vec<Value> = self
            .take
            .key(&self.keys.meta)
            .key(&self.keys.work)
            .key(&self.keys.requests)
            .key(&self.keys.results)
            .key(&self.keys.deliveries)
            .key(&self.keys.errors)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(count.max(1))
            .arg(self.lease.as_millis().min(u64::MAX as u128) as u64)
            .arg(MAX_DELIVERIES)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.unreachable(e))?;
        if reply.len() < 3 || !(reply.len() - 3).is_multiple_of(5) {
            return Err(self.corrupt("the take script answered an unexpected shape"));
        }
        let int = |v: &Value| i64::from_redis_value_ref(v).ok();
        let text = |v: &Value| String::from_redis_value_ref(v).ok();
        let stop = text(&reply[2]).filter(|s| !s.is_empty());
        let mut entries = Vec::with_capacity((reply.len() - 3) / 5);
        for e in reply[3..].chunks_exact(5) {
            let (Some(entry), Some(idx), Some(deliveries), Some(req), Some(err)) = (
                text(&e[0]),
                text(&e[1]).and_then(|s| s.parse::<i64>().ok()),
                int(&e[2]),
                text(&e[3]),
                text(&e[4]),
            ) else {
                return Err(self.corrupt("a handed-out request could not be read"));
            };
            let stored: StoredRequest = serde_json::from_str(&req)
                .map_err(|_| self.corrupt(format!("request {idx} is not one pacer wrote")))?;
            // The path goes after this worker's base URL (and its key): a
            // path, never an address; the body bounded.
            let path_ok = stored.u.starts_with('/')
                && !stored.u.starts_with("//")
                && stored.u.len() <= 2048
                && !stored
                    .u
                    .contains(|c: char| c.is_whitespace() || c.is_control());
            if !path_ok || stored.b.len() > MAX_BODY_BYTES {
                return Err(self.corrupt(format!(
                    "request {idx} has a path or a body pacer would not have loaded"
                )));
            }
            entries.push(TakenEntry {
                entry,
                row: PendingRow {
                    idx,
                    custom_id: stored.c,
                    priority: stored.r,
                    attempts: deliveries.saturating_sub(1).clamp(0, u32::MAX as i64) as u32,
                    url: stored.u,
                    body: stored.b,
                    model: stored.m,
                    est_prompt: stored.p,
                    est_output: stored.o,
                },
                exhausted: (!err.is_empty()).then_some(err),
            });
        }
        Ok(TakeReply {
            total: int(&reply[0]).unwrap_or(-1),
            finished: int(&reply[1]).unwrap_or(0).max(0) as u64,
            stop,
            entries,
        })
    }

    /// Records results (the first one of each request wins). Returns, for
    /// each, whether it was new, and the job's finished and total counts.
    pub(crate) async fn finish(
        &self,
        results: &[Finished],
    ) -> Result<(Vec<bool>, u64, i64), JobError> {
        let mut c = self.conn.clone();
        let mut inv = self.finish.prepare_invoke();
        for k in self.keys.all() {
            inv.key(k);
        }
        inv.arg(GROUP).arg(KEEP_FINISHED.as_secs());
        for f in results {
            let value = serde_json::to_string(&f.result)
                .map_err(|e| self.corrupt(format!("a result could not be encoded: {e}")))?;
            inv.arg(f.idx)
                .arg(&f.entry)
                .arg(value)
                .arg(u8::from(f.result.state() == RequestState::Failed))
                .arg(f.result.p.unwrap_or(0).min(i64::MAX as u64))
                .arg(f.result.c.unwrap_or(0).min(i64::MAX as u64))
                .arg(
                    f.result
                        .u
                        .filter(|u| u.is_finite() && *u >= 0.0)
                        .unwrap_or(0.0),
                );
        }
        let reply: Vec<i64> = inv
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.unreachable(e))?;
        if reply.len() != results.len() + 2 {
            return Err(self.corrupt("the finish script answered an unexpected shape"));
        }
        let new = reply[..results.len()].iter().map(|&n| n == 1).collect();
        let finished = reply[results.len()].max(0) as u64;
        Ok((new, finished, reply[results.len() + 1]))
    }

    /// Hands requests this worker took back to the job at once.
    pub(crate) async fn release(&self, held: &[(i64, String)]) -> Result<(), JobError> {
        if held.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let mut inv = self.release.prepare_invoke();
        inv.key(&self.keys.work)
            .key(&self.keys.deliveries)
            .key(&self.keys.results)
            .arg(GROUP);
        for (idx, entry) in held {
            inv.arg(*idx).arg(entry);
        }
        let _: i64 = inv
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(())
    }

    /// Renews this worker's leases on `entries`; returns those another
    /// worker has reclaimed meanwhile.
    pub(crate) async fn renew(&self, entries: &[String]) -> Result<Vec<String>, JobError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let mut inv = self.renew.prepare_invoke();
        inv.key(&self.keys.work).arg(GROUP).arg(&self.consumer);
        for e in entries {
            inv.arg(e);
        }
        inv.invoke_async(&mut c)
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// Keeps the last error of requests being retried (a request failed
    /// after too many deliveries is failed with it).
    pub(crate) async fn record_errors(&self, errors: &[(i64, String)]) -> Result<(), JobError> {
        if errors.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let pairs: Vec<(i64, &str)> = errors.iter().map(|(i, e)| (*i, e.as_str())).collect();
        c.hset_multiple::<_, _, _, ()>(&self.keys.errors, &pairs)
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// Stops the job for every worker (a bad key, exhausted quota, budget).
    pub async fn stop_all(&self, sentence: &str) -> Result<(), JobError> {
        let mut c = self.conn.clone();
        c.hset::<_, _, _, ()>(&self.keys.meta, "stop", sentence)
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// Lifts a stop: a run or worker joining a stopped job resumes it.
    pub async fn clear_stop(&self) -> Result<(), JobError> {
        let mut c = self.conn.clone();
        c.hdel::<_, _, ()>(&self.keys.meta, "stop")
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// The results of `idxs` that exist, in the same order (`None`: not yet).
    pub async fn results(&self, idxs: &[i64]) -> Result<Vec<Option<StoredResult>>, JobError> {
        if idxs.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.keys.results)
            .arg(idxs)
            .query_async(&mut c)
            .await
            .map_err(|e| self.unreachable(e))?;
        raw.into_iter()
            .zip(idxs)
            .map(|(v, idx)| match v {
                None => Ok(None),
                Some(s) => serde_json::from_str(&s).map(Some).map_err(|_| {
                    self.corrupt(format!(
                        "the result of request {idx} is not one pacer wrote"
                    ))
                }),
            })
            .collect()
    }

    /// The indexes of every request with a result, in input order.
    pub async fn result_indexes(&self) -> Result<Vec<i64>, JobError> {
        let mut c = self.conn.clone();
        let raw: Vec<String> = c
            .hkeys(&self.keys.results)
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut keys = raw
            .iter()
            .map(|k| {
                k.parse::<i64>()
                    .map_err(|_| self.corrupt(format!("a result key {k:?}")))
            })
            .collect::<Result<Vec<i64>, JobError>>()?;
        keys.sort_unstable();
        Ok(keys)
    }
}

/// A worker's name in the consumer group: unique per process.
fn consumer_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(40)
                .collect::<String>()
        })
        .unwrap_or_default();
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
