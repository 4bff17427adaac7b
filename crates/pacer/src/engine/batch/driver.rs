//! The batch driver: one task that plans, uploads, creates, polls and
//! collects the job's batches until every request is finished or the run
//! stops.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::api::{Api, CallError, Phase, Remote, RemoteCounts};
use super::collect::{fetch_lines, Collected, Sink, LINE_FRAME};
use super::files;
use super::plan::{self, BatchLimits};
use super::recover::{self, Next};
use super::schedule::{next_poll_interval, Hold};
use super::BatchOptions;
use crate::cost::{Budget, CostMeter, PriceTable, Reservation};
use crate::engine::attempt::{Emitter, Stop};
use crate::engine::output::error_line;
use crate::engine::EngineError;
use crate::report::Event;
use crate::retry::{
    admissible_wait, verdict_of_error, NextStep, Outcome, RetryPolicy, RetryState, StopReason,
    Verdict,
};
use crate::store::{
    BatchApi, BatchCommand, BatchMember, BatchRow, BatchState, Command, JobStore, NewBatch,
    RequestState, StoreError,
};
use crate::tokens::TokenEstimate;
use crate::transport::display_url;

/// The most batches open at once: enough to keep a provider busy, few
/// enough that polling them all stays cheap.
const MAX_OPEN: usize = 64;

/// Debug builds only: `PACER_TEST_BATCH_PAUSE=POINT` holds the driver at
/// `POINT` (`planned`, `uploaded`, `created`, `ended`, `collecting`) for an
/// hour, so the e2e tests can kill it exactly there (`uploaded` and
/// `created` are the moments between the provider's answer and the commit
/// of the id it gave).
async fn test_pause(point: &str) {
    if pausing_at(point) {
        tracing::warn!("PACER_TEST_BATCH_PAUSE: holding at {point}");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

fn pausing_at(point: &str) -> bool {
    cfg!(debug_assertions) && std::env::var("PACER_TEST_BATCH_PAUSE").as_deref() == Ok(point)
}

/// Unix ms now: the times the state records.
fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A batch the driver is responsible for.
#[derive(Debug)]
struct Open {
    row: BatchRow,
    next_poll: Instant,
    interval: Duration,
    reservation: Option<Reservation>,
    /// The last status and counts shown, to report changes only.
    seen: Option<(String, RemoteCounts)>,
}

/// One API, endpoint and model: what a batch holds, and what OpenAI's
/// enqueued-token limit holds back.
type Group = (BatchApi, String, Option<String>);

/// What to do after a failed call.
enum Judged {
    RetryIn(Duration),
    Stopped,
}

/// What the driver needs from the run.
pub(crate) struct DriverParts {
    pub api: Api,
    pub writer: mpsc::UnboundedSender<Command>,
    pub reader: JobStore,
    pub events: Arc<Emitter>,
    pub stop: Arc<Stop>,
    pub budget: Option<Budget>,
    /// Prices at batch rates.
    pub prices: PriceTable,
    pub policy: RetryPolicy,
    pub max_retry_time: Duration,
    pub max_response_bytes: u64,
    pub options: BatchOptions,
    pub job: String,
    pub state: PathBuf,
    /// A server answered in this run already (the key check counts).
    pub reached: bool,
}

pub(crate) struct Driver {
    api: Api,
    writer: mpsc::UnboundedSender<Command>,
    reader: Arc<Mutex<JobStore>>,
    events: Arc<Emitter>,
    stop: Arc<Stop>,
    budget: Option<Budget>,
    meter: CostMeter,
    policy: RetryPolicy,
    max_retry_time: Duration,
    max_line: usize,
    options: BatchOptions,
    job: String,
    state: PathBuf,
    reached: AtomicBool,
    next_id: i64,
    open: BTreeMap<i64, Open>,
    holds: HashMap<Group, Hold>,
}

/// How the driver ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DriveEnd {
    /// Batches left running at the provider (the run stopped).
    pub open_at_provider: u64,
}

impl Driver {
    pub fn new(p: DriverParts) -> Driver {
        Driver {
            api: p.api,
            writer: p.writer,
            reader: Arc::new(Mutex::new(p.reader)),
            events: p.events,
            stop: p.stop,
            budget: p.budget,
            meter: CostMeter::new(p.prices),
            policy: p.policy,
            max_retry_time: p.max_retry_time,
            max_line: usize::try_from(p.max_response_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(LINE_FRAME),
            options: p.options,
            job: p.job,
            state: p.state,
            reached: AtomicBool::new(p.reached),
            next_id: 1,
            open: BTreeMap::new(),
            holds: HashMap::new(),
        }
    }

    /// Runs until every request is finished or the run stops.
    pub async fn drive(mut self) -> Result<DriveEnd, EngineError> {
        self.load().await?;
        loop {
            if self.stop.is_stopped() {
                break;
            }
            let progressed = self.step().await?;
            if self.stop.is_stopped() {
                break;
            }
            if progressed {
                continue;
            }
            if self.open.is_empty() && self.read(|s| s.counts()).await?.pending == 0 {
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.stop.cancelled() => break,
            }
        }
        let open_at_provider = self
            .open
            .values()
            .filter(|o| o.row.maybe_at_provider())
            .count() as u64;
        // The files of batches not yet sent are written again on resume.
        for o in self.open.values() {
            files::remove_input(&files::input_path(&self.state, o.row.api, o.row.id));
        }
        Ok(DriveEnd { open_at_provider })
    }

    /// The job's batches as the state has them; the open ones are the
    /// driver's again, their worst cases reserved.
    async fn load(&mut self) -> Result<(), EngineError> {
        let (rows, next_id) = self
            .read(|s| Ok((s.batches()?, s.next_batch_id()?)))
            .await?;
        self.next_id = next_id;
        let now = Instant::now();
        for row in rows.into_iter().filter(|r| r.state.is_open()) {
            let reservation = self
                .budget
                .as_mut()
                .map(|b| b.reserve_committed(row.worst_usd.unwrap_or(0.0)));
            self.open.insert(
                row.id,
                Open {
                    row,
                    next_poll: now,
                    interval: self.options.poll_interval,
                    reservation,
                    seen: None,
                },
            );
        }
        self.flush().await
    }

    /// Takes the next step that is due: a batch to upload, create or
    /// collect, polls that fell due, else a new batch. False when nothing
    /// was due.
    async fn step(&mut self) -> Result<bool, EngineError> {
        let now = Instant::now();
        let mut due = Vec::new();
        let ids: Vec<i64> = self.open.keys().copied().collect();
        for id in ids {
            if self.stop.is_stopped() {
                return Ok(true);
            }
            let Some(o) = self.open.get(&id) else {
                continue;
            };
            match recover::next_step(&o.row) {
                Next::Upload => {
                    self.upload(id).await?;
                    return Ok(true);
                }
                Next::Create | Next::FindOrCreate => {
                    self.create(id).await?;
                    return Ok(true);
                }
                Next::Collect => {
                    self.collect(id).await?;
                    return Ok(true);
                }
                Next::Poll if o.next_poll <= now => {
                    if let Some(batch_id) = &o.row.batch_id {
                        due.push((id, o.row.api, batch_id.clone()));
                    }
                }
                Next::Poll | Next::Nothing => {}
            }
        }
        if due.is_empty() {
            return self.plan().await;
        }
        // The batches due are asked about at once; what they answer is
        // acted on one by one.
        let this = &*self;
        let answers = futures::future::join_all(due.iter().map(|(id, api, batch_id)| async move {
            let what = format!("checking batch {id} ({batch_id})");
            (*id, this.call(&what, || this.api.get(*api, batch_id)).await)
        }))
        .await;
        for (id, answer) in answers {
            match answer? {
                Some(remote) => self.polled(id, remote).await?,
                None => break, // stopping
            }
        }
        Ok(true)
    }

    /// When something is next due: a poll, or a held group's next try.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let polls = self
            .open
            .values()
            .filter(|o| o.row.state == BatchState::Submitted)
            .map(|o| o.next_poll);
        let holds = self.holds.values().map(|h| h.until).filter(|t| *t > now);
        polls
            .chain(holds)
            .min()
            .unwrap_or(now + self.options.poll_interval)
    }

    // ----- the store ------------------------------------------------------

    /// Runs a read on the reader connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&JobStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader.lock().expect("reader lock")))
            .await
            .map_err(|e| EngineError::Config(format!("reading the state failed: {e}")))?
            .map_err(EngineError::from)
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        self.writer
            .send(cmd)
            .map_err(|_| StoreError::WriterGone("the writer thread ended".into()).into())
    }

    fn batch_cmd(&self, cmd: BatchCommand) -> Result<(), EngineError> {
        self.send(Command::Batch(cmd))
    }

    /// Waits until everything sent to the writer is durable: a provider id
    /// is committed before the step that depends on it.
    async fn flush(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Flush(tx))?;
        rx.await.map_err(|_| {
            StoreError::WriterGone("the writer thread ended during a flush".into()).into()
        })
    }

    // ----- calls to the provider -----------------------------------------

    /// Stops the run for `reason` (the first reason wins).
    fn stop_for(&self, reason: StopReason) {
        let sentence = reason.to_string();
        if self.stop.trigger(reason) {
            self.events.emit(Event::Stopping { reason: sentence });
        }
    }

    /// What a failed call means: try again after a wait, or stop the run.
    /// The same rules as a live request: 401, 403 and exhausted quota stop;
    /// 429, 5xx and network failures are retried (429s and outages bounded
    /// by `--max-retry-time`, others by `--max-retries`); anything else is
    /// a refusal that retrying cannot mend.
    fn judge(
        &self,
        error: CallError,
        state: &mut RetryState,
        what: &str,
    ) -> Result<Judged, EngineError> {
        let now = Instant::now();
        let (verdict, detail) = match &error {
            CallError::Http(answer) => {
                self.reached.store(true, Ordering::Relaxed);
                let outcome = Outcome::of_answer(answer, Duration::ZERO, SystemTime::now());
                let text = String::from_utf8_lossy(&answer.body);
                let text: String = text.chars().take(300).collect();
                (outcome.verdict, format!("HTTP {}: {text}", answer.status))
            }
            CallError::Transport(e) => {
                if let Some(cause) = e.unreached_cause() {
                    if !self.reached.load(Ordering::Relaxed) {
                        let url = display_url(&self.api.transport.config().base_url);
                        self.stop_for(StopReason::Unreachable { url, cause });
                        return Ok(Judged::Stopped);
                    }
                }
                (verdict_of_error(e), e.to_string())
            }
            CallError::Unreadable(why) => {
                self.reached.store(true, Ordering::Relaxed);
                (
                    Verdict::Fail,
                    format!("its answer could not be read: {why}"),
                )
            }
            CallError::Local(why) => {
                return Err(EngineError::Config(format!("{what}: {why}")));
            }
        };
        match verdict {
            Verdict::Stop(mut reason) => {
                if let StopReason::Unauthorized { key_source, .. } = &mut reason {
                    *key_source = self.api.transport.key_source().map(str::to_owned);
                }
                self.stop_for(reason);
                Ok(Judged::Stopped)
            }
            Verdict::Retry(reason) => {
                if let Some(Err(too_long)) = reason
                    .server_wait()
                    .map(|w| admissible_wait(w, self.max_retry_time))
                {
                    self.stop_for(too_long.into());
                    return Ok(Judged::Stopped);
                }
                let step = self.policy.next_step(
                    state,
                    &reason,
                    reason.is_outage_like(),
                    self.max_retry_time,
                    now,
                    &mut rand::thread_rng(),
                );
                match step {
                    NextStep::RetryAt(at) => {
                        tracing::info!("{what}: {detail}; trying again");
                        Ok(Judged::RetryIn(at.saturating_duration_since(now)))
                    }
                    NextStep::GiveUp => {
                        self.stop_for(StopReason::BatchRefused {
                            what: what.to_string(),
                            detail: format!("it kept failing ({detail})"),
                        });
                        Ok(Judged::Stopped)
                    }
                }
            }
            Verdict::Success | Verdict::Fail => {
                self.stop_for(StopReason::BatchRefused {
                    what: what.to_string(),
                    detail,
                });
                Ok(Judged::Stopped)
            }
        }
    }

    /// Makes a call until it succeeds, or the run stops (`None`).
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<Option<T>, EngineError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut state = RetryState::default();
        loop {
            let result = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Ok(None),
                r = f() => r,
            };
            let error = match result {
                Ok(v) => {
                    self.reached.store(true, Ordering::Relaxed);
                    return Ok(Some(v));
                }
                Err(e) => e,
            };
            match self.judge(error, &mut state, what)? {
                Judged::Stopped => return Ok(None),
                Judged::RetryIn(wait) => {
                    if !self.pause(wait).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Sleeps `wait`; false if the run stopped meanwhile.
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.stop.cancelled() => false,
        }
    }

    // ----- the phases ------------------------------------------------------

    /// Plans the next batch from pending work, if a group may have one.
    async fn plan(&mut self) -> Result<bool, EngineError> {
        if self.stop.is_stopped() || self.open.len() >= MAX_OPEN {
            return Ok(false);
        }
        let groups = self.read(|s| s.pending_groups()).await?;
        let now = Instant::now();
        for (url, model) in groups {
            // Requests no batch API takes were refused before the run began.
            let Some((api, endpoint)) = plan::route(&url) else {
                continue;
            };
            let group: Group = (api, endpoint.to_string(), model.clone());
            let hold = self.holds.get(&group).copied();
            if hold.is_some_and(|h| self.held(&group, &h, now)) {
                continue;
            }
            let limits = BatchLimits::of(api)
                .with_max_lines(self.options.max_lines)
                .with_max_lines(hold.and_then(|h| h.max_lines));
            let (u, m) = (url.clone(), model.clone());
            let candidates = self
                .read(move |s| s.batch_candidates(&u, m.as_deref(), limits.max_lines))
                .await?;
            if candidates.is_empty() {
                continue;
            }
            let price = model.as_deref().and_then(|m| self.meter.prices().lookup(m));
            let worst = |c: &crate::store::BatchCandidate| {
                price.map(|p| {
                    p.max_cost(&TokenEstimate {
                        prompt: c.est_prompt,
                        max_output: c.est_output,
                    })
                })
            };
            let left = self.budget.as_ref().map(Budget::remaining);
            let take = plan::take(api, endpoint, &candidates, limits, left, worst);
            if take.n == 0 {
                let waiting_on_others = self.budget.as_ref().is_some_and(|b| b.reserved() > 0.0);
                if waiting_on_others {
                    // Open batches may cost less than reserved: wait for them.
                    continue;
                }
                let cap = self.budget.as_ref().map_or(0.0, Budget::cap);
                self.stop_for(StopReason::BudgetReached { cap_usd: cap });
                return Ok(false);
            }
            let reservation = match self.budget.as_mut() {
                Some(b) => match b.try_reserve(take.worst_usd.unwrap_or(0.0)) {
                    Ok(r) => Some(r),
                    Err(_) => continue, // cannot happen: take kept under it
                },
                None => None,
            };
            let id = self.next_id;
            self.next_id += 1;
            let idxs: Vec<i64> = candidates[..take.n].iter().map(|c| c.idx).collect();
            let at = wall_ms();
            let new = NewBatch {
                id,
                api,
                endpoint: endpoint.to_string(),
                model: model.clone(),
                est_tokens: take.est_tokens,
                worst_usd: take.worst_usd,
                idxs,
            };
            self.batch_cmd(BatchCommand::Plan { batch: new, at })?;
            self.flush().await?;
            let row = BatchRow {
                id,
                api,
                endpoint: endpoint.to_string(),
                model,
                state: BatchState::Planned,
                file_id: None,
                creating_at: None,
                batch_id: None,
                status: None,
                output_file_id: None,
                error_file_id: None,
                results_url: None,
                lines: take.n as u64,
                est_tokens: take.est_tokens,
                worst_usd: take.worst_usd,
                error: None,
                created_at: at,
                updated_at: at,
            };
            self.open.insert(
                id,
                Open {
                    row,
                    next_poll: now,
                    interval: self.options.poll_interval,
                    reservation,
                    seen: None,
                },
            );
            test_pause("planned").await;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether `group` is held back now.
    fn held(&self, group: &Group, hold: &Hold, now: Instant) -> bool {
        let group_open = self
            .open
            .values()
            .any(|o| same_group(&o.row, group) && o.row.state == BatchState::Submitted);
        hold.holds(now, group_open)
    }

    /// OpenAI: writes the batch's input file and uploads it.
    async fn upload(&mut self, id: i64) -> Result<(), EngineError> {
        let row = self.open[&id].row.clone();
        let path = files::input_path(&self.state, row.api, id);
        let (r, p) = (row.clone(), path.clone());
        self.read(move |s| files::write_input(s, &r, &p)).await?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("batch-{id}.jsonl"));
        let what = format!("the upload of batch {id}'s input file");
        let Some(file_id) = self.call(&what, || self.api.upload(&path, &name)).await? else {
            return Ok(());
        };
        test_pause("uploaded").await;
        self.batch_cmd(BatchCommand::Uploaded {
            id,
            file_id: file_id.clone(),
            at: wall_ms(),
        })?;
        self.flush().await?;
        files::remove_input(&path);
        if let Some(o) = self.open.get_mut(&id) {
            o.row.state = BatchState::Uploaded;
            o.row.file_id = Some(file_id);
        }
        Ok(())
    }

    /// Creates the batch at the provider, exactly once: a create whose
    /// answer was lost (a crash, a timeout) is looked for before another
    /// goes out.
    async fn create(&mut self, id: i64) -> Result<(), EngineError> {
        let mut row = self.open[&id].row.clone();
        let body = files::input_path(&self.state, row.api, id);
        if row.api == BatchApi::Anthropic {
            let (r, p) = (row.clone(), body.clone());
            self.read(move |s| files::write_input(s, &r, &p)).await?;
        }
        let what = format!("the creation of batch {id}");
        let mut retry = RetryState::default();
        loop {
            if row.creating_at.is_some() {
                match self.find(&row).await? {
                    None => return Ok(()), // stopping
                    Some(Some(remote)) => {
                        tracing::info!(
                            "batch {id} was created before the last stop: {} adopted",
                            remote.id
                        );
                        return self.submitted(id, remote, &body).await;
                    }
                    Some(None) => {}
                }
            }
            let at = wall_ms();
            self.batch_cmd(BatchCommand::Creating { id, at })?;
            self.flush().await?;
            row.creating_at = Some(at);
            if let Some(o) = self.open.get_mut(&id) {
                o.row.creating_at = Some(at);
            }
            let result = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Ok(()),
                r = self.create_once(&row, &body) => r,
            };
            let error = match result {
                Ok(remote) => {
                    self.reached.store(true, Ordering::Relaxed);
                    test_pause("created").await;
                    return self.submitted(id, remote, &body).await;
                }
                Err(e) => e,
            };
            match self.judge(error, &mut retry, &what)? {
                Judged::Stopped => return Ok(()),
                Judged::RetryIn(wait) => {
                    if !self.pause(wait).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn create_once(
        &self,
        row: &BatchRow,
        body: &std::path::Path,
    ) -> Result<Remote, CallError> {
        match row.api {
            BatchApi::OpenAi => {
                let file_id = row
                    .file_id
                    .as_deref()
                    .ok_or_else(|| CallError::Local("no input file was recorded".into()))?;
                self.api
                    .create_openai(file_id, &row.endpoint, &self.job, row.id)
                    .await
            }
            BatchApi::Anthropic => self.api.create_anthropic(body).await,
        }
    }

    /// Looks for the batch a create call for `row` may have made. `None`:
    /// the run is stopping; `Some(None)`: not there.
    async fn find(&self, row: &BatchRow) -> Result<Option<Option<Remote>>, EngineError> {
        let taken: HashSet<String> = self
            .read(|s| s.batches())
            .await?
            .into_iter()
            .filter_map(|b| b.batch_id)
            .collect();
        let what = format!("the search for batch {} at the provider", row.id);
        let window = self.api.transport.config().timeout;
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let a = after.clone();
            let Some(page) = self
                .call(&what, || self.api.list(row.api, a.as_deref()))
                .await?
            else {
                return Ok(None);
            };
            pages += 1;
            let found = match row.api {
                BatchApi::OpenAi => {
                    recover::adopt_openai(&page.batches, &self.job, row.id, row.file_id.as_deref())
                }
                BatchApi::Anthropic => match row.creating_at {
                    Some(marker) => {
                        recover::adopt_anthropic(&page.batches, marker, window, row.lines, &taken)
                    }
                    None => None,
                },
            };
            if let Some(r) = found {
                return Ok(Some(Some(r.clone())));
            }
            if !recover::keep_listing(&page, pages, row.creating_at) {
                return Ok(Some(None));
            }
            after = page.next_after;
        }
    }

    /// The provider has the batch: record its id before anything else.
    async fn submitted(
        &mut self,
        id: i64,
        remote: Remote,
        body: &std::path::Path,
    ) -> Result<(), EngineError> {
        self.batch_cmd(BatchCommand::Submitted {
            id,
            batch_id: remote.id.clone(),
            status: remote.status.clone(),
            at: wall_ms(),
        })?;
        self.flush().await?;
        files::remove_input(body);
        let poll = self.options.poll_interval;
        let Some(o) = self.open.get_mut(&id) else {
            return Ok(());
        };
        o.row.state = BatchState::Submitted;
        o.row.batch_id = Some(remote.id.clone());
        o.row.status = Some(remote.status.clone());
        o.next_poll = Instant::now() + poll;
        o.interval = poll;
        let (api, model, lines) = (o.row.api, o.row.model.clone(), o.row.lines);
        for _ in 0..lines {
            self.events.emit(Event::Sent);
        }
        self.events.emit(Event::BatchSubmitted {
            batch: id,
            api: api.to_string(),
            model,
            requests: lines,
            id: remote.id,
        });
        Ok(())
    }

    /// Acts on what the provider said about the batch: a new status, its end.
    async fn polled(&mut self, id: i64, remote: Remote) -> Result<(), EngineError> {
        if !self.open.contains_key(&id) {
            return Ok(());
        }
        let now = Instant::now();
        let poll = self.options.poll_interval;
        let o = self.open.get_mut(&id).expect("an open batch");
        let changed_status = o.row.status.as_deref() != Some(remote.status.as_str());
        let seen = (remote.status.clone(), remote.counts);
        let news = o.seen.as_ref() != Some(&seen);
        o.seen = Some(seen);
        // Back off while nothing changes; start over when the status moves.
        o.interval = next_poll_interval(o.interval, changed_status, poll);
        o.next_poll = now + o.interval;
        o.row.status = Some(remote.status.clone());
        if changed_status {
            self.batch_cmd(BatchCommand::Status {
                id,
                status: remote.status.clone(),
                at: wall_ms(),
            })?;
        }
        if news {
            self.events.emit(Event::BatchProgress {
                batch: id,
                status: remote.status.clone(),
                processed: remote.counts.processed,
                failed: remote.counts.failed,
                total: remote.counts.total,
            });
        }
        match remote.phase {
            Phase::Running => Ok(()),
            Phase::Failed => self.failed(id, remote).await,
            Phase::Completed | Phase::Expired | Phase::Cancelled => {
                self.batch_cmd(BatchCommand::Ended {
                    id,
                    status: remote.status.clone(),
                    output_file_id: remote.output_file_id.clone(),
                    error_file_id: remote.error_file_id.clone(),
                    results_url: remote.results_url.clone(),
                    at: wall_ms(),
                })?;
                self.flush().await?;
                if let Some(o) = self.open.get_mut(&id) {
                    o.row.state = BatchState::Ended;
                    o.row.output_file_id = remote.output_file_id;
                    o.row.error_file_id = remote.error_file_id;
                    o.row.results_url = remote.results_url;
                }
                test_pause("ended").await;
                self.collect(id).await
            }
        }
    }

    /// OpenAI failed the batch as a whole. For its enqueued-token limit the
    /// requests wait for a later batch (not a failure); for errors about
    /// lines those requests fail with them and the rest go again; for
    /// anything else the run stops, saying why.
    async fn failed(&mut self, id: i64, remote: Remote) -> Result<(), EngineError> {
        let row = self.open[&id].row.clone();
        let first = remote.errors.first().map(|e| match &e.code {
            Some(code) => format!("{code}: {}", e.message),
            None => e.message.clone(),
        });
        let message = first.clone().unwrap_or_else(|| "no reason given".into());
        if remote.token_limited() {
            self.close(id, BatchState::Deferred, Some(message.clone()), 0.0)
                .await?;
            self.hold(&row);
            self.events.emit(Event::BatchDeferred {
                batch: id,
                model: row.model.clone(),
                reason: message,
            });
            return Ok(());
        }
        let members = self.read(move |s| s.batch_members(id)).await?;
        let mut failed = 0;
        let mut done = HashSet::new();
        for e in &remote.errors {
            let Some(line) = e.line.filter(|l| *l >= 1) else {
                continue;
            };
            let Some(m) = members.get(line as usize - 1) else {
                continue;
            };
            if !done.insert(m.idx) {
                continue;
            }
            let code = e.code.as_deref().unwrap_or("invalid_batch_line");
            self.send(Command::Finish {
                idx: m.idx,
                state: RequestState::Failed,
                line: error_line(&m.custom_id, code, &e.message),
                error: Some(format!("{code}: {}", e.message)),
                prompt_tokens: None,
                cached_tokens: None,
                completion_tokens: None,
                cost_usd: None,
            })?;
            failed += 1;
        }
        let requeued = members.len() as u64 - failed;
        self.close(id, BatchState::Failed, Some(message.clone()), 0.0)
            .await?;
        self.events.emit(Event::BatchEnded {
            batch: id,
            status: remote.status,
            succeeded: 0,
            failed,
            requeued,
        });
        if failed == 0 {
            // Sending the same requests again would fail the same way.
            self.stop_for(StopReason::BatchRefused {
                what: format!("batch {id}"),
                detail: format!("it failed as a whole ({message}); its requests are pending again"),
            });
        }
        Ok(())
    }

    /// Holds `row`'s group back after the enqueued-token limit refused it:
    /// until another of its batches ends, or, with none open, for a while
    /// and with smaller batches from then on.
    fn hold(&mut self, row: &BatchRow) {
        let group = group_of(row);
        let others_open = self.open.values().any(|o| {
            o.row.id != row.id && same_group(&o.row, &group) && o.row.state == BatchState::Submitted
        });
        let before = self.holds.get(&group).copied();
        let hold = Hold::after_refusal(
            before,
            others_open,
            row.lines,
            self.options.poll_interval,
            Instant::now(),
        );
        self.holds.insert(group, hold);
    }

    /// The batch is over for pacer: its requests without a result go back
    /// to pending, its reservation is settled at what it cost.
    async fn close(
        &mut self,
        id: i64,
        state: BatchState,
        error: Option<String>,
        cost: f64,
    ) -> Result<(), EngineError> {
        self.batch_cmd(BatchCommand::Close {
            id,
            state,
            error,
            at: wall_ms(),
        })?;
        self.flush().await?;
        if let Some(o) = self.open.remove(&id) {
            if let (Some(b), Some(r)) = (self.budget.as_mut(), o.reservation) {
                b.settle(r, cost);
            }
            files::remove_input(&files::input_path(&self.state, o.row.api, id));
        }
        Ok(())
    }

    /// Writes an ended batch's results: each request once, to the same
    /// output and state as a live run; then the batch is closed. Safe to
    /// repeat after a crash: only requests still in flight are written.
    async fn collect(&mut self, id: i64) -> Result<(), EngineError> {
        let row = self.open[&id].row.clone();
        let mut members: HashMap<i64, BatchMember> = self
            .read(move |s| s.batch_members(id))
            .await?
            .into_iter()
            .map(|m| (m.idx, m))
            .collect();
        let anthropic = row.api == BatchApi::Anthropic;
        let sources: Vec<String> = match row.api {
            BatchApi::OpenAi => [&row.output_file_id, &row.error_file_id]
                .into_iter()
                .flatten()
                .map(|f| format!("/v1/files/{f}/content"))
                .collect(),
            BatchApi::Anthropic => {
                let constructed = row
                    .batch_id
                    .as_ref()
                    .map(|b| format!("/v1/messages/batches/{b}/results"));
                match &row.results_url {
                    Some(u) if self.api.transport.on_base_origin(u) => vec![u.clone()],
                    _ => constructed.into_iter().collect(),
                }
            }
        };
        let max_lines = row.lines.saturating_mul(2).saturating_add(1000);
        let mut got = Collected::default();
        for source in sources {
            let what = format!("the download of batch {id}'s results");
            let mut retry = RetryState::default();
            loop {
                let mut sink = Sink {
                    api: row.api,
                    members: &mut members,
                    meter: &mut self.meter,
                    writer: &self.writer,
                    events: &self.events,
                    max_retries: self.policy.max_retries,
                    max_line: self.max_line,
                    got: &mut got,
                    now: SystemTime::now(),
                    failed_to_send: false,
                };
                let result = tokio::select! {
                    biased;
                    () = self.stop.cancelled() => return Ok(()),
                    r = fetch_lines(&self.api, &source, anthropic, self.max_line, max_lines, &mut sink) => r,
                };
                if sink.failed_to_send {
                    return Err(StoreError::WriterGone("the writer thread ended".into()).into());
                }
                let error = match result {
                    Ok(()) => break,
                    Err(e) => e,
                };
                match self.judge(error, &mut retry, &what)? {
                    Judged::Stopped => return Ok(()),
                    Judged::RetryIn(wait) => {
                        if !self.pause(wait).await {
                            return Ok(());
                        }
                    }
                }
            }
            if pausing_at("collecting") && got.succeeded > 0 {
                // What was written so far is durable; the rest is not.
                self.flush().await?;
                test_pause("collecting").await;
            }
        }
        if got.unreadable > 0 {
            tracing::warn!(
                "batch {id}: {} result lines could not be read; their requests go again",
                got.unreadable
            );
        }
        // Requests the results did not mention go back to pending (Close),
        // unless they have been sent in more batches than --max-retries
        // allows: a provider that never answers them must not be asked
        // for ever.
        for m in members.values() {
            if m.attempts > self.policy.max_retries {
                self.send(Command::Finish {
                    idx: m.idx,
                    state: RequestState::Failed,
                    line: error_line(
                        &m.custom_id,
                        "batch_no_result",
                        &format!(
                            "{} batches ended without a result for this request",
                            m.attempts
                        ),
                    ),
                    error: Some("batch_no_result".into()),
                    prompt_tokens: None,
                    cached_tokens: None,
                    completion_tokens: None,
                    cost_usd: None,
                })?;
                got.failed += 1;
            } else {
                got.requeued += 1;
            }
        }
        let status = row.status.clone().unwrap_or_default();
        self.close(id, BatchState::Done, None, got.cost_usd).await?;
        // A good end lifts a hold on the group (smaller batches stay).
        if let Some(h) = self.holds.get_mut(&group_of(&row)) {
            h.strikes = 0;
        }
        self.events.emit(Event::BatchEnded {
            batch: id,
            status,
            succeeded: got.succeeded,
            failed: got.failed,
            requeued: got.requeued,
        });
        if let Some(reason) = got.stop {
            self.stop_for(reason);
        }
        Ok(())
    }
}

fn group_of(row: &BatchRow) -> Group {
    (row.api, row.endpoint.clone(), row.model.clone())
}

fn same_group(row: &BatchRow, group: &Group) -> bool {
    row.api == group.0 && row.endpoint == group.1 && row.model == group.2
}
