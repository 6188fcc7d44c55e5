//! The background worker: its own thread and current-thread tokio runtime, and the event loop
//! that moves records from the queue to the server. Every rule lives in a part it calls:
//!
//! - `wake`: when to look at the queue; `job`: a record in hand;
//! - `trace_gate` (with `storage_model`): scores held until their trace is stored;
//! - `lane` (with `rate_window`): each endpoint's line and its rate limit;
//! - `retry` (with `retry_queue`): what an answer means, and when to try again;
//! - `flush_barrier`, `waiters`: what flush and shutdown wait for, and their deadlines;
//! - `losses` (with `log_limiter`): every drop counted, hooked and logged;
//! - `transport`: one request.

mod flush_barrier;
mod job;
mod lane;
mod log_limiter;
mod losses;
mod rate_window;
mod retry;
mod retry_queue;
mod storage_model;
mod trace_gate;
mod transport;
mod waiters;
mod wake;

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::body::{score_body, trace_body};
use crate::config::Config;
use crate::drop_event::{DropEvent, DropReason, RecordKind};
use crate::error::ConfigError;
use crate::producer::{Control, Shared};
use crate::record::Record;
use crate::score::Score;
use flush_barrier::FlushBarrier;
use job::Job;
use lane::Lane;
use losses::Losses;
use rate_window::{named_limit, Answer, RateWindow};
use retry::{RetryPolicy, Verdict};
use retry_queue::RetryQueue;
use trace_gate::TraceGate;
use transport::{Attempt, Transport};
use waiters::Waiters;
use wake::{Poller, Watch};

/// The worker thread, for joining it once it has exited.
pub(crate) struct WorkerHandle {
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Disconnects when the worker thread is about to exit.
    exited: Receiver<()>,
}

impl WorkerHandle {
    /// Joins the thread if it has exited or does so shortly; never waits unboundedly.
    pub(crate) fn join(&self) {
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
            self.exited.recv_timeout(Duration::from_millis(250))
        {
            let handle = self
                .thread
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(handle) = handle {
                let _ = handle.join();
            }
        }
    }
}

/// Starts the worker thread and waits until its runtime and HTTP client are built.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    records: Receiver<Record>,
    control: mpsc::UnboundedReceiver<Control>,
) -> Result<WorkerHandle, ConfigError> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    // Dropped by the thread as its very last act: lets shutdown wait for the exit with a bound.
    let (exit_tx, exited) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("pandaprobe-worker".into())
        .spawn(move || {
            let started = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| Ok((rt, Transport::new(&shared.config).map_err(|e| e.to_string())?)));
            let (runtime, transport) = match started {
                Ok(parts) => parts,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let mut worker = Worker::new(shared, records, control, transport);
            // A panic must not take the accounting with it: the worker's state outlives it.
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(worker.run())));
            if let Err(panic) = ran {
                let _entered = runtime.enter();
                worker.died(panic.as_ref());
            }
            {
                let _entered = runtime.enter();
                drop(worker);
            }
            runtime.shutdown_timeout(Duration::from_millis(100));
            drop(exit_tx);
        })
        .map_err(|e| ConfigError::Worker(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(WorkerHandle {
            thread: Mutex::new(Some(thread)),
            exited,
        }),
        Ok(Err(e)) => Err(ConfigError::Worker(e)),
        Err(_) => Err(ConfigError::Worker("the worker thread stopped".into())),
    }
}

/// How many records the worker has in hand at most (ready, in flight, waiting for a retry);
/// scores waiting for their trace are bounded apart, by the queue size. It takes records off
/// the queue only below this, so a dead server cannot make retries grow without bound: the
/// queue fills and `score()` drops instead. Room enough that a few records stuck in long
/// retries do not stall the rest, yet never more than the queue itself holds (or twice the
/// requests in flight, for a tiny queue).
fn window(config: &Config) -> usize {
    let roomy = (config.max_in_flight * 4)
        .max(config.batch_size * 2)
        .max(1024);
    roomy.min(config.max_queue_size.max(config.max_in_flight * 2))
}

/// One request under way: it hands back its job's key and what the attempt produced.
type Sending = Pin<Box<dyn Future<Output = (u64, Attempt)> + Send>>;

enum Event {
    Control(Option<Control>),
    Done(u64, Attempt),
    Wake,
    Timer,
}

struct Worker {
    shared: Arc<Shared>,
    records: Receiver<Record>,
    control: mpsc::UnboundedReceiver<Control>,
    control_open: bool,
    transport: Transport,
    policy: RetryPolicy,
    scores: Lane<Job>,
    traces: Lane<Job>,
    retries: RetryQueue<Job>,
    gate: TraceGate<Job>,
    /// Jobs whose request is under way, by key; their futures hold only copies of the bytes.
    sending: HashMap<u64, Job>,
    in_flight: FuturesUnordered<Sending>,
    next_key: u64,
    barrier: FlushBarrier,
    waiters: Waiters,
    poller: Poller,
    losses: Losses,
    /// Jobs in hand outside the trace gate; bounded by `window`.
    active: usize,
    window: usize,
    next_tick: Instant,
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        records: Receiver<Record>,
        control: mpsc::UnboundedReceiver<Control>,
        transport: Transport,
    ) -> Worker {
        let now = Instant::now();
        let config = &shared.config;
        let lane = |limit| {
            Lane::new(RateWindow::new(
                limit,
                config.retry_initial_backoff,
                config.max_retry_after,
            ))
        };
        let (scores, traces) = (lane(config.scores_rate_limit), lane(config.traces_rate_limit));
        let policy = RetryPolicy::new(config);
        let gate = TraceGate::new(config.max_queue_size, now);
        let poller = Poller::new(config.flush_interval, now);
        let (window, next_tick) = (window(config), now + config.flush_interval);
        Worker {
            scores,
            traces,
            policy,
            gate,
            poller,
            window,
            next_tick,
            losses: Losses::new(Arc::clone(&shared)),
            shared,
            records,
            control,
            control_open: true,
            transport,
            retries: RetryQueue::default(),
            sending: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            next_key: 0,
            barrier: FlushBarrier::default(),
            waiters: Waiters::default(),
            active: 0,
        }
    }

    async fn run(&mut self) {
        loop {
            let now = Instant::now();
            self.pull(now);
            self.release_due(now);
            self.watch(now);
            self.dispatch(now);
            self.waiters.answer_flushes(&self.barrier, now);
            if self.waiters.shutdown_due(self.drained(), now) {
                self.finish_shutdown(now);
                break;
            }
            let deadline = self.next_deadline();
            let event = tokio::select! {
                biased;
                control = self.control.recv(), if self.control_open => Event::Control(control),
                Some((key, attempt)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    Event::Done(key, attempt)
                }
                _ = self.shared.woken() => Event::Wake,
                _ = tokio::time::sleep_until(deadline) => Event::Timer,
            };
            let now = Instant::now();
            match event {
                Event::Control(Some(Control::Flush { timeout, reply })) => {
                    // Everything queued before this request is ahead of `target` in queue order.
                    let target = self.barrier.taken() + self.records.len() as u64;
                    self.waiters.flush(target, timeout, reply, now);
                }
                Event::Control(Some(Control::Shutdown { timeout, reply })) => {
                    self.shared.close();
                    self.waiters.shutdown(timeout, Some(reply), now);
                }
                Event::Control(None) => {
                    // Every handle is gone without a shutdown request: shut down anyway.
                    self.control_open = false;
                    self.shared.close();
                    let timeout = self.shared.config.shutdown_timeout;
                    self.waiters.shutdown(timeout, None, now);
                }
                Event::Done(key, attempt) => self.on_done(key, attempt, now),
                Event::Wake => self.poller.woken(now),
                Event::Timer => {}
            }
            if now >= self.next_tick {
                self.next_tick = now + self.shared.config.flush_interval;
                self.losses.report_counters(now, false);
            }
        }
        self.shared.counters.mark_worker_stopped();
    }

    fn lane(&mut self, kind: RecordKind) -> &mut Lane<Job> {
        match kind {
            RecordKind::Score => &mut self.scores,
            RecordKind::Trace => &mut self.traces,
        }
    }

    /// Takes records off the queue while there is room for them.
    fn pull(&mut self, now: Instant) {
        while self.active < self.window && !self.gate.is_full() {
            let Ok(record) = self.records.try_recv() else {
                break;
            };
            let seq = self.barrier.take();
            match record {
                Record::Score(score) => {
                    if let Some(job) = self.score_job(seq, score, now) {
                        self.admit(job);
                    }
                }
                Record::Trace(trace) => {
                    let ended = *trace;
                    let (data, scores) = (ended.data, ended.scores);
                    let config = &self.shared.config;
                    let body = trace_body(&data, config.environment.as_deref(), config.release.as_deref());
                    let name = data.name.into();
                    let mut job = Job::new(RecordKind::Trace, seq, data.trace_id, name, body, now);
                    job.spans = data.spans.len();
                    let held = scores
                        .into_iter()
                        .filter_map(|s| self.score_job(seq, s, now))
                        .collect();
                    self.gate.trace_queued(data.trace_id, held);
                    self.barrier.open(seq);
                    self.traces.push(job);
                    self.active += 1;
                }
            }
        }
    }

    /// A score as a job, with its body; `None` (counted) if it somehow lacks a trace id.
    fn score_job(&mut self, seq: u64, mut score: Score, now: Instant) -> Option<Job> {
        let Some(trace_id) = score.trace_id() else {
            // `score()` validated the id; should that ever change, still count it.
            let event = DropEvent::new(RecordKind::Score, DropReason::Rejected, Uuid::nil(), score.name());
            self.losses.dropped(&event, now);
            return None;
        };
        let body = score_body(trace_id, &score);
        self.barrier.open(seq);
        Some(Job::new(RecordKind::Score, seq, trace_id, score.take_name(), body, now))
    }

    /// A score goes to its lane unless the trace gate holds it.
    fn admit(&mut self, job: Job) {
        if let Some(job) = self.gate.admit(job.trace_id, job) {
            self.scores.push(job);
            self.active += 1;
        }
    }

    /// Retries whose time has come, and probes of traces that can be stored by now.
    fn release_due(&mut self, now: Instant) {
        while let Some(job) = self.retries.pop_due(now) {
            self.lane(job.kind).push(job);
        }
        for (mut job, probe) in self.gate.due(now) {
            job.probe = Some(probe);
            self.scores.push_front(job);
            self.active += 1;
        }
    }

    fn watch(&mut self, now: Instant) {
        match self.poller.look(now, self.barrier.taken()) {
            Watch::Polling => self.shared.keep_awake(),
            Watch::Asleep => {}
            Watch::FellAsleep => {
                self.shared.let_sleep();
                // A record that came in while producers still saw the worker awake.
                self.pull(now);
                if self.poller.look(now, self.barrier.taken()) == Watch::Polling {
                    self.shared.keep_awake();
                }
            }
        }
    }

    /// Starts requests while there is room in flight, taking from the two endpoints in turn
    /// so that neither can starve the other.
    fn dispatch(&mut self, now: Instant) {
        let max = self.shared.config.max_in_flight;
        let mut progressed = true;
        while progressed && self.in_flight.len() < max {
            progressed = false;
            for kind in [RecordKind::Trace, RecordKind::Score] {
                if self.in_flight.len() >= max {
                    break;
                }
                if let Some(job) = self.lane(kind).next(now) {
                    self.start(job, now);
                    progressed = true;
                }
            }
        }
    }

    fn start(&mut self, mut job: Job, now: Instant) {
        job.sent_at = now;
        let url = match job.kind {
            RecordKind::Score => self.shared.config.scores_url.clone(),
            RecordKind::Trace => self.shared.config.traces_url.clone(),
        };
        // A probe may well meet a 500, after which the server drops the connection.
        let client = self
            .transport
            .client(job.retry.fresh_connection() || job.probe.is_some());
        let (body, request_id) = (job.body.clone(), job.request_id.clone());
        let key = self.next_key;
        self.next_key += 1;
        self.sending.insert(key, job);
        self.in_flight.push(Box::pin(async move {
            // The transport does not panic; should it ever, the record is retried, not lost.
            let attempt = AssertUnwindSafe(transport::send(client, url, body, request_id))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Attempt::Failed {
                    ambiguous: true,
                    message: "the HTTP client panicked".into(),
                });
            (key, attempt)
        }));
        self.shared.counters.request();
    }

    fn on_done(&mut self, key: u64, attempt: Attempt, now: Instant) {
        let Some(mut job) = self.sending.remove(&key) else {
            return;
        };
        job.note(&attempt);
        let verdict = self
            .policy
            .decide(&mut job.retry, &attempt, job.probe.is_some(), now);
        let answer = match &verdict {
            Verdict::Delivered => Answer::Success,
            Verdict::RateLimited { retry_after } => Answer::RateLimited {
                retry_after: *retry_after,
                named: named_limit(attempt.message()),
            },
            _ => Answer::Other,
        };
        self.lane(job.kind).finished(now, job.sent_at, answer);
        if attempt.status() == Some(500) {
            self.transport.renew_pool();
        }
        self.log_attempt(&job, &attempt, &verdict);
        match verdict {
            Verdict::Delivered => {
                if job.kind == RecordKind::Trace {
                    self.gate.trace_accepted(job.trace_id, job.spans, now);
                }
                if let Some(probe) = job.probe {
                    for sibling in self.gate.probe_delivered(job.trace_id, probe, now) {
                        self.scores.push(sibling);
                        self.active += 1;
                    }
                }
                self.finish(job, None, now);
            }
            Verdict::Drop(reason) => self.drop_job(job, reason, now),
            Verdict::RetryAt { at, ambiguous } => {
                self.shared.counters.retried(job.kind, ambiguous);
                self.retries.push(at, job);
            }
            Verdict::RateLimited { .. } => {
                self.shared.counters.retried(job.kind, false);
                self.lane(job.kind).push_front(job);
            }
            Verdict::TraceNotStored => {
                self.shared.counters.retried(job.kind, false);
                let trace_id = job.trace_id;
                match job.probe.take() {
                    Some(probe) => {
                        self.active -= 1;
                        self.gate.probe_not_stored(trace_id, job, probe, now);
                    }
                    // Only probes wait for their trace; should that change, retry anyway.
                    None => self.retries.push(now, job),
                }
            }
        }
    }

    fn log_attempt(&self, job: &Job, attempt: &Attempt, verdict: &Verdict) {
        let attempts = job.retry.attempts();
        let (kind, request_id, status) = (job.kind, &job.request_id, attempt.status());
        let message = attempt.message();
        if self.shared.config.debug {
            tracing::info!(target: "pandaprobe", %kind, ?request_id, attempts, ?status, ?verdict, message);
        } else {
            tracing::debug!(target: "pandaprobe", %kind, ?request_id, attempts, ?status, ?verdict, message);
        }
    }

    /// Drops a job in hand. A trace takes the scores waiting for it along; a probe that gave
    /// up waiting for its trace takes its siblings, any other lets them go on their own.
    fn drop_job(&mut self, job: Job, reason: DropReason, now: Instant) {
        let gave_up_on_trace =
            job.probe.is_some() && reason == DropReason::RetriesExhausted && job.last_status == Some(500);
        if job.kind == RecordKind::Trace || gave_up_on_trace {
            for mut held in self.gate.trace_dropped(job.trace_id) {
                held.last_status = job.last_status;
                held.last_message = Some(format!(
                    "its trace was not stored ({reason}): {}",
                    job.last_message.as_deref().unwrap_or_default()
                ));
                self.settle(held, Some(reason), now);
            }
        } else if job.probe.is_some() {
            for sibling in self.gate.trace_dropped(job.trace_id) {
                self.scores.push(sibling);
                self.active += 1;
            }
        }
        self.finish(job, Some(reason), now);
    }

    /// Counts the outcome of a job in hand and forgets it.
    fn finish(&mut self, job: Job, dropped: Option<DropReason>, now: Instant) {
        self.settle(job, dropped, now);
        self.active -= 1;
    }

    /// Counts a job's outcome (in hand or held by the gate).
    fn settle(&mut self, job: Job, dropped: Option<DropReason>, now: Instant) {
        match dropped {
            None => self.shared.counters.sent(job.kind),
            Some(reason) => {
                self.waiters.dropped(job.seq, reason);
                self.losses.dropped(&job.drop_event(reason), now);
            }
        }
        self.barrier.close(job.seq);
    }

    fn drained(&self) -> bool {
        self.active == 0 && self.gate.held() == 0 && self.records.is_empty()
    }

    fn next_deadline(&self) -> Instant {
        [
            self.poller.next_look(),
            self.retries.next_due(),
            self.scores.wake_at(),
            self.traces.wake_at(),
            self.gate.next_due(),
            self.waiters.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .fold(self.next_tick, Instant::min)
    }

    /// Ends the run: what is still undelivered is dropped and counted, every caller answered.
    fn finish_shutdown(&mut self, now: Instant) {
        let abandoned = self.abandon_all(DropReason::Shutdown, DropReason::ShutdownInFlight, now);
        if abandoned > 0 {
            tracing::warn!(
                target: "pandaprobe",
                "shutdown: {abandoned} record(s) not delivered in time were dropped"
            );
        }
        let result = self.waiters.finish_shutdown(abandoned);
        self.shared.set_final_result(result);
        self.losses.report_counters(now, true);
    }

    /// Drops everything held or queued: `in_flight` for requests under way, `reason` for the
    /// rest. Returns how many.
    fn abandon_all(&mut self, reason: DropReason, in_flight: DropReason, now: Instant) -> u64 {
        // Answers that have already arrived count as what they are, not as abandoned.
        while let Some(Some((key, attempt))) = self.in_flight.next().now_or_never() {
            self.on_done(key, attempt, now);
        }
        self.in_flight.clear();
        let mut dropped = 0;
        let under_way: Vec<Job> = self.sending.drain().map(|(_, job)| job).collect();
        for job in under_way {
            self.finish(job, Some(in_flight), now);
            dropped += 1;
        }
        let mut in_hand: Vec<Job> = self.scores.drain().chain(self.traces.drain()).collect();
        in_hand.extend(self.retries.drain());
        for job in in_hand {
            self.finish(job, Some(reason), now);
            dropped += 1;
        }
        for job in self.gate.drain() {
            self.settle(job, Some(reason), now);
            dropped += 1;
        }
        while let Ok(record) = self.records.try_recv() {
            for event in record_events(record, reason) {
                self.losses.dropped(&event, now);
                dropped += 1;
            }
        }
        self.barrier.clear();
        self.active = 0;
        dropped
    }

    /// The worker panicked: count what it held as lost, tell every caller, refuse new records.
    fn died(&mut self, panic: &(dyn Any + Send)) {
        self.shared.mark_dead();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let now = Instant::now();
        // The state may be half-updated; whatever this cannot count, the counters still show
        // as `worker_failed`, since `pending` is derived.
        let abandoned = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.abandon_all(DropReason::WorkerFailed, DropReason::WorkerFailed, now)
        }));
        self.waiters.fail_all();
        // A panicking tracing layer may be what killed the worker: do not let it again.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            tracing::error!(
                target: "pandaprobe",
                "the pandaprobe worker panicked ({message}); {} record(s) it held were dropped \
                 as worker_failed, and the client accepts no more",
                abandoned.as_ref().map_or(0, |n| *n)
            );
        }));
    }
}

/// The drop events of a record never taken off the queue: a score, or a trace and its scores.
fn record_events(record: Record, reason: DropReason) -> Vec<DropEvent> {
    match record {
        Record::Score(score) => {
            let trace_id = score.trace_id().unwrap_or_default();
            vec![DropEvent::new(RecordKind::Score, reason, trace_id, score.name())]
        }
        Record::Trace(trace) => {
            let id = trace.data.trace_id;
            let mut events = vec![DropEvent::new(RecordKind::Trace, reason, id, trace.data.name)];
            events.extend(
                trace
                    .scores
                    .iter()
                    .map(|s| DropEvent::new(RecordKind::Score, reason, id, s.name())),
            );
            events
        }
    }
}
