use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{InFlight, Pacer};
use crate::limit::TokenTicket;

/// Longest the first admission waits for its answer before the rest go.
const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A request's turn: its place in flight and the tokens admission charged.
#[derive(Debug)]
pub struct Admission {
    pub in_flight: InFlight,
    pub ticket: TokenTicket,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The queue already holds `--max-queue` requests; `retry_after` is the
    /// wait expected for the queue as it is.
    Full { retry_after: Duration },
}

/// The order of waiting requests: higher priority first, then arrival.
///
/// The pacer alone admits in whatever order tasks reach its locks; a gateway
/// owes its clients an order they can steer, so one dispatcher task takes
/// admission for the best waiting request at a time and hands it over.
/// A waiter that has gone (its client hung up, its wait ran out) is
/// skipped; an admission already taken for it passes to the next.
#[derive(Debug)]
pub struct AdmissionQueue {
    shared: Arc<Shared>,
    dispatcher: JoinHandle<()>,
    max_queue: usize,
}

#[derive(Debug)]
struct Shared {
    pacer: Arc<Pacer>,
    waiting: Mutex<Waiting>,
    arrived: Notify,
}

#[derive(Debug, Default)]
struct Waiting {
    /// Waiting requests in their order: the first key is the next to go.
    /// A map, not a heap, so that a request whose client leaves is taken
    /// out at once (its memory freed, the depth true).
    heap: BTreeMap<Key, Entry>,
    /// How many wait at each priority, for a request's position without
    /// scanning the heap.
    by_priority: BTreeMap<i64, usize>,
    next_seq: u64,
    /// Taken out of the heap by the dispatcher and not yet handed over: still
    /// waiting, as its client sees it.
    admitting: usize,
    /// Admissions handed over in all.
    handed_over: u64,
    /// The mean tokens of requests entering, smoothed: the token pace in
    /// requests.
    mean_tokens: f64,
    /// Admissions handed over, with the first one's time: the measured rate
    /// that predicts waits while the pace itself is unknown.
    admitted: u64,
    first_admitted: Option<Instant>,
    last_admitted: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    priority: i64,
    tokens: u64,
    tx: oneshot::Sender<Admission>,
}

/// Higher priority first, then earlier arrival.
type Key = (Reverse<i64>, u64);

/// A place in the arrival order, kept across a request's retries so that a
/// retried request is not sent to the back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub priority: i64,
    seq: u64,
}

impl AdmissionQueue {
    /// Starts the dispatcher on the current runtime.
    pub fn new(pacer: Arc<Pacer>, max_queue: usize) -> AdmissionQueue {
        let shared = Arc::new(Shared {
            pacer,
            waiting: Mutex::new(Waiting::default()),
            arrived: Notify::new(),
        });
        let dispatcher = tokio::spawn(dispatch(shared.clone()));
        AdmissionQueue {
            shared,
            dispatcher,
            max_queue: max_queue.max(1),
        }
    }

    pub fn pacer(&self) -> &Arc<Pacer> {
        &self.shared.pacer
    }

    /// A new place at the back of `priority`'s line.
    pub fn place(&self, priority: i64) -> Place {
        let mut w = self.shared.lock();
        let seq = w.next_seq;
        w.next_seq += 1;
        Place { priority, seq }
    }

    /// Requests waiting now (those whose client left may still count until
    /// the dispatcher meets them).
    pub fn depth(&self) -> usize {
        let w = self.shared.lock();
        w.heap.len() + w.admitting
    }

    /// Waits for the request's turn. Dropping the future leaves the queue:
    /// the dispatcher skips it.
    pub async fn enter(&self, place: Place, tokens: u64) -> Result<Admission, QueueRefusal> {
        let rx = {
            let mut w = self.shared.lock();
            // The fast path: nobody waiting, a slot free and room in every
            // limit, so the request goes now without a hand-over through the
            // dispatcher (two task wake-ups). The first request still goes
            // through it (it waits for the provider's first answer).
            let pacer = &self.shared.pacer;
            if w.heap.is_empty() && w.admitting == 0 && pacer.has_answered() {
                if let Some(in_flight) = pacer.try_slot() {
                    if let Some(ticket) = pacer.try_admit(tokens) {
                        w.note_admitted(Instant::now());
                        w.handed_over += 1;
                        return Ok(Admission { in_flight, ticket });
                    }
                }
            }
            let ahead = w.heap.len() + w.admitting;
            if ahead >= self.max_queue {
                let retry_after = w.expected_wait(&self.shared.pacer, ahead, Instant::now());
                return Err(QueueRefusal::Full { retry_after });
            }
            // An exponential mean over roughly the last hundred requests.
            w.mean_tokens = if w.mean_tokens == 0.0 {
                tokens as f64
            } else {
                0.99 * w.mean_tokens + 0.01 * tokens as f64
            };
            let (tx, rx) = oneshot::channel();
            *w.by_priority.entry(place.priority).or_default() += 1;
            w.heap.insert(
                place.key(),
                Entry {
                    priority: place.priority,
                    tokens,
                    tx,
                },
            );
            rx
        };
        self.shared.arrived.notify_one();
        // Leaving (the future dropped) takes the request out of the queue.
        let mut leave = Leave {
            shared: &self.shared,
            key: Some(place.key()),
        };
        // The dispatcher never drops a sender it could still deliver to.
        let admission = rx.await.expect("the dispatcher lives as long as the queue");
        leave.key = None;
        Ok(admission)
    }

    /// How long a request of `priority` arriving now should expect to wait:
    /// the requests ahead of it at the rate admissions are made. Zero while
    /// nothing tells the rate (nothing paced, nothing admitted yet).
    pub fn expected_wait(&self, priority: i64) -> Duration {
        let w = self.shared.lock();
        let ahead = w
            .by_priority
            .range(priority..)
            .map(|(_, n)| n)
            .sum::<usize>()
            + w.admitting;
        w.expected_wait(&self.shared.pacer, ahead, Instant::now())
    }
}

impl Place {
    fn key(&self) -> Key {
        (Reverse(self.priority), self.seq)
    }
}

/// Takes a waiting request out of the queue when its wait is dropped.
struct Leave<'a> {
    shared: &'a Shared,
    key: Option<Key>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut w = self.shared.lock();
            // Gone already if the dispatcher took it: its turn passes on.
            if let Some(e) = w.heap.remove(&key) {
                w.forget(e.priority);
            }
        }
    }
}

impl Drop for AdmissionQueue {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The best waiter whose client is still there.
    fn pop_live(&self) -> Option<Entry> {
        let mut w = self.lock();
        while let Some((_, e)) = w.heap.pop_first() {
            w.forget(e.priority);
            if !e.tx.is_closed() {
                return Some(e);
            }
        }
        None
    }

    /// Returns once somebody waits.
    async fn wait_for_any(&self) {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if !self.lock().heap.is_empty() {
                return;
            }
            arrived.await;
        }
    }

    /// The best live waiter, waiting for one to arrive.
    async fn next_live(&self) -> Entry {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(e) = self.pop_live() {
                return e;
            }
            arrived.await;
        }
    }
}

impl Waiting {
    fn forget(&mut self, priority: i64) {
        if let Some(n) = self.by_priority.get_mut(&priority) {
            *n -= 1;
            if *n == 0 {
                self.by_priority.remove(&priority);
            }
        }
    }

    fn expected_wait(&self, pacer: &Pacer, ahead: usize, now: Instant) -> Duration {
        let view = pacer.view();
        // The pace in force, where there is one (requests, or tokens at the
        // mean request's size, whichever is slower); else what admissions
        // have shown over the last stretch of work.
        let by_tokens = view
            .tpm
            .filter(|_| self.mean_tokens >= 1.0)
            .map(|tpm| tpm / 60.0 / self.mean_tokens);
        let paced = match (view.rpm.map(|rpm| rpm / 60.0), by_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let measured = match (self.first_admitted, self.last_admitted) {
            (Some(first), Some(last)) if self.admitted >= 10 && last > first => {
                let span = last.duration_since(first).as_secs_f64();
                // Stale after a quiet spell: the rate then is not the rate now.
                (now.saturating_duration_since(last) < Duration::from_secs(60))
                    .then(|| (self.admitted - 1) as f64 / span)
            }
            _ => None,
        };
        let Some(rate) = paced.or(measured).filter(|r| r.is_finite() && *r > 0.0) else {
            return Duration::ZERO;
        };
        let secs = (ahead as f64 + 1.0) / rate;
        crate::provider::bounded::saturating_secs(secs)
            .map(|d| d.min(crate::provider::MAX_SERVER_WAIT))
            .unwrap_or(Duration::ZERO)
    }

    fn note_admitted(&mut self, now: Instant) {
        // A fresh start after a quiet minute: the old rate says nothing.
        if self
            .last_admitted
            .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(60))
        {
            self.first_admitted = Some(now);
            self.admitted = 0;
        }
        self.admitted += 1;
        self.last_admitted = Some(now);
    }
}

/// The dispatcher: a slot, then the best waiter, then its rate admission,
/// then the hand-over.
async fn dispatch(shared: Arc<Shared>) {
    loop {
        // A slot is taken only with somebody waiting, so that in-flight
        // counts only requests.
        shared.wait_for_any().await;
        let in_flight = shared.pacer.slot().await;
        // The best at the instant the slot came, not when the wait began.
        let Some(entry) = shared.pop_live() else {
            continue;
        };
        shared.lock().admitting = 1;
        let ticket = shared.pacer.admit(entry.tokens).await;
        let mut admission = Admission { in_flight, ticket };
        let mut entry = entry;
        loop {
            match entry.tx.send(admission) {
                Ok(()) => break,
                // It left while being admitted: the turn is the next one's.
                Err(back) => {
                    admission = back;
                    entry = shared.next_live().await;
                }
            }
        }
        let first = {
            let mut w = shared.lock();
            w.admitting = 0;
            w.note_admitted(Instant::now());
            w.handed_over += 1;
            w.handed_over == 1
        };
        // The first request goes alone: its answer's headers tell the
        // limits before a burst is sent blind (bounded: a first request that
        // hangs must not hold up the rest for long).
        if first {
            shared.pacer.first_answer(FIRST_ANSWER_WAIT).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Limits;

    /// A queue whose provider has answered once already (see
    /// `the_first_request_goes_alone_until_its_answer`).
    fn queue(rpm: Option<f64>, concurrency: usize, max_queue: usize) -> Arc<AdmissionQueue> {
        let pacer = Arc::new(Pacer::new(&Limits {
            rpm,
            concurrency: Some(concurrency),
            ..Limits::default()
        }));
        pacer.observe(Instant::now(), &Default::default());
        Arc::new(AdmissionQueue::new(pacer, max_queue))
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_goes_alone_until_its_answer() {
        let pacer = Arc::new(Pacer::new(&Limits::default()));
        let q = Arc::new(AdmissionQueue::new(pacer.clone(), 100));
        let t0 = Instant::now();
        let first = q.enter(q.place(0), 0).await.unwrap();
        let second = {
            let q = q.clone();
            let place = q.place(0);
            tokio::spawn(async move { q.enter(place, 0).await.map(|_| Instant::now()) })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "nothing known yet: one at a time");
        // The first answer arrives: the rest may go.
        let ok = crate::retry::Outcome {
            verdict: crate::retry::Verdict::Success,
            limits: Default::default(),
            latency: Duration::from_millis(300),
            charged_tokens: Some(0),
        };
        pacer.feedback(Instant::now(), &ok, &first.ticket);
        let at = second.await.unwrap().unwrap();
        assert_eq!(at - t0, Duration::from_millis(300));
        // A first request that never answers holds the rest back 5 s at most.
        let silent = Arc::new(Pacer::new(&Limits::default()));
        let q = Arc::new(AdmissionQueue::new(silent, 100));
        let t1 = Instant::now();
        let _hung = q.enter(q.place(0), 0).await.unwrap();
        q.enter(q.place(0), 0).await.unwrap();
        assert_eq!(Instant::now() - t1, FIRST_ANSWER_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_goes_first_then_arrival_order() {
        let q = queue(None, 1, 100);
        // The only slot is taken: everything queues.
        let first = q.enter(q.place(0), 0).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (name, priority) in [("low-a", 0), ("low-b", 0), ("high", 5), ("mid", 1)] {
            let q = q.clone();
            let tx = tx.clone();
            let place = q.place(priority);
            tokio::spawn(async move {
                let a = q.enter(place, 0).await.unwrap();
                tx.send(name).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(a);
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(q.depth(), 4);
        drop(first);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(rx.recv().await.unwrap());
        }
        assert_eq!(order, ["high", "mid", "low-a", "low-b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_leaves_is_skipped_and_its_turn_passes_on() {
        let q = queue(None, 1, 100);
        let first = q.enter(q.place(0), 0).await.unwrap();
        let leaver = {
            let q = q.clone();
            let place = q.place(9);
            tokio::spawn(async move { q.enter(place, 0).await })
        };
        let stayer = {
            let q = q.clone();
            let place = q.place(0);
            tokio::spawn(async move { q.enter(place, 0).await.map(|_| Instant::now()) })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(q.depth(), 2);
        leaver.abort();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(q.depth(), 1, "the one who left is out of the queue at once");
        drop(first);
        let at = tokio::time::timeout(Duration::from_secs(1), stayer)
            .await
            .expect("the turn reached the one who stayed")
            .unwrap()
            .unwrap();
        assert!(at >= Instant::now() - Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_with_the_expected_wait() {
        // 60 a minute: one a second once the first minute's burst is spent.
        let q = queue(Some(60.0), 1, 3);
        let held = q.enter(q.place(0), 0).await.unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                let place = q.place(0);
                tokio::spawn(async move { q.enter(place, 0).await.map(|_| ()) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(q.depth(), 3);
        match q.enter(q.place(0), 0).await {
            Err(QueueRefusal::Full { retry_after }) => {
                assert_eq!(
                    retry_after,
                    Duration::from_secs(4),
                    "3 ahead + itself at 1/s"
                )
            }
            Ok(_) => panic!("a fourth waiter was queued past --max-queue"),
        }
        // A high priority has nobody ahead of it.
        assert_eq!(q.expected_wait(10), Duration::from_secs(1));
        assert_eq!(q.expected_wait(0), Duration::from_secs(4));
        drop(held);
        for w in waiters {
            w.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_pace_slower_than_the_request_pace_sets_the_wait() {
        // 6,000 requests a minute but 60,000 tokens: at 1,000 tokens a
        // request, one a second.
        let pacer = Arc::new(Pacer::new(&Limits {
            rpm: Some(6000.0),
            tpm: Some(60_000.0),
            concurrency: Some(1),
            ..Limits::default()
        }));
        pacer.observe(Instant::now(), &Default::default());
        let q = Arc::new(AdmissionQueue::new(pacer, 100));
        let held = q.enter(q.place(0), 1_000).await.unwrap();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                let place = q.place(0);
                tokio::spawn(async move { q.enter(place, 1_000).await.map(|_| ()) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // 4 ahead (one of them being admitted) and itself, at one a second.
        assert_eq!(q.expected_wait(0), Duration::from_secs(5));
        drop(held);
        for w in waiters {
            w.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_pace_the_wait_is_predicted_from_admissions_seen() {
        let q = queue(None, 1, 100);
        assert_eq!(q.expected_wait(0), Duration::ZERO, "nothing known yet");
        // Twenty admissions, one every 100 ms: 10 a second.
        for _ in 0..20 {
            let a = q.enter(q.place(0), 0).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(a);
        }
        let w = q.expected_wait(0);
        assert!(
            (Duration::from_millis(90)..=Duration::from_millis(110)).contains(&w),
            "{w:?}"
        );
    }
}
