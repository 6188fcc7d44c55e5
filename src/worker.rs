//! The background worker: its own thread, its own current-thread tokio runtime. It drains the
//! queue, sends each record as its own request (the server has no batch endpoint) with a bound
//! on requests in flight, parks failed records in a due-time retry queue while it keeps sending
//! others, pauses an endpoint as a whole on a 429, holds scores until the trace they belong to
//! has been answered, and answers flush and shutdown requests by their deadlines.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use bytes::Bytes;
use crossbeam_channel::Receiver;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use reqwest::header::HeaderValue;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use crate::body::score_body;
use crate::config::Config;
use crate::error::{ConfigError, FlushError};
use crate::flush_barrier::FlushBarrier;
use crate::lane::Lane;
use crate::record::Record;
use crate::retry::{decide, Attempt, Decision, RetryHint};
use crate::stats::{Counters, DropReason, Kind};
use crate::transport::Transport;

/// How often a repeated warning (drops, rejections) is logged at most, with a count.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// While records keep arriving, the worker looks at the queue on its own this often, doubling
/// after each look that finds nothing, up to [`LAST_POLL`]; then it sleeps until the next
/// interval tick or a producer's wake-up. Producers skip the wake-up (a syscall that would land
/// on their hot path) while the worker polls.
const FIRST_POLL: Duration = Duration::from_millis(1);
const LAST_POLL: Duration = Duration::from_millis(8);

/// State shared by the client handles and the worker. The worker never holds a client handle,
/// so dropping the last one is what shuts it down.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Set while the worker is polling the queue on its own, or once a producer has woken it;
    /// producers that find it set skip the wake-up. Cleared by the worker when it goes to sleep.
    /// So: at most one wake-up per batch however many producers cross the threshold, and none
    /// at all under steady load.
    pub(crate) awake: AtomicBool,
    pub(crate) wake: Notify,
    /// Set when shutdown begins; `score()` refuses from then on.
    pub(crate) closed: AtomicBool,
    /// The outcome of the shutdown, for later `shutdown()` calls.
    pub(crate) final_result: OnceLock<Result<(), FlushError>>,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            config,
            counters: Counters::default(),
            awake: AtomicBool::new(false),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            final_result: OnceLock::new(),
        }
    }

    /// Wakes the worker unless a wake-up is already on its way.
    pub(crate) fn wake_worker(&self) {
        if !self.awake.load(Ordering::SeqCst) && !self.awake.swap(true, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }
}

/// Where the worker sends a flush's or shutdown's outcome: a blocking caller or an async one.
pub(crate) enum Reply {
    Blocking(crossbeam_channel::Sender<Result<(), FlushError>>),
    Async(oneshot::Sender<Result<(), FlushError>>),
}

impl Reply {
    fn send(self, result: Result<(), FlushError>) {
        // The caller may have given up waiting; then nobody needs the answer.
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.try_send(result);
            }
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// Requests to the worker, on their own channel so that a full record queue never holds them up.
pub(crate) enum Control {
    /// Answer once every record queued before this request has reached its outcome, or when
    /// the timeout passes.
    Flush { timeout: Duration, reply: Reply },
    /// Stop taking records, deliver what is queued until the timeout, drop the rest, exit.
    Shutdown { timeout: Duration, reply: Reply },
}

/// Starts the worker thread and waits until its runtime and HTTP client are built.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    records: Receiver<Record>,
    control: mpsc::UnboundedReceiver<Control>,
) -> Result<(JoinHandle<()>, crossbeam_channel::Receiver<()>), ConfigError> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    // Dropped by the thread as its very last act: lets shutdown wait for the exit with a bound.
    let (exit_tx, exit_rx) = crossbeam_channel::bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name("pandaprobe-worker".into())
        .spawn(move || {
            let started = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    let transport = Transport::new(&shared.config).map_err(|e| e.to_string())?;
                    Ok((rt, transport))
                });
            let (runtime, transport) = match started {
                Ok(parts) => {
                    let _ = ready_tx.send(Ok(()));
                    parts
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let worker = Worker::new(shared, records, control, transport);
            runtime.block_on(worker.run());
            runtime.shutdown_timeout(Duration::from_millis(100));
            drop(exit_tx);
        })
        .map_err(|e| ConfigError::Worker(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((handle, exit_rx)),
        Ok(Err(e)) => Err(ConfigError::Worker(e)),
        Err(_) => Err(ConfigError::Worker("the worker thread stopped".into())),
    }
}

/// One record in the worker's hands, serialized once, with its retry state.
struct Job {
    kind: Kind,
    /// The flush barrier this record belongs to: its position in the queue.
    seq: u64,
    trace_id: Uuid,
    body: Bytes,
    /// The same on every attempt, so a server log can tie retries together.
    request_id: HeaderValue,
    attempts: u32,
    first_failure: Option<Instant>,
    backoff: Option<ExponentialBackoff>,
    fresh_connection: bool,
}

/// What the worker knows of a trace it sent recently, for the scores that follow it.
enum TraceState {
    /// The trace's request has not been answered: its scores wait here.
    InFlight(Vec<Job>),
    /// Answered; scores for it go out from this moment on.
    Answered { release_at: Instant },
}

/// A flush caller waiting for every record up to `target` in queue order.
struct FlushWaiter {
    target: u64,
    deadline: Instant,
    timeout: Duration,
    reply: Reply,
}

struct ShutdownState {
    deadline: Instant,
    timeout: Duration,
    replies: Vec<Reply>,
}

/// One request under way: it hands back the record and what the attempt produced. Polled by
/// the worker's own task (no task spawned per request).
type Sending = Pin<Box<dyn Future<Output = (Job, Attempt)> + Send>>;

enum Event {
    Control(Option<Control>),
    Done(Box<(Job, Attempt)>),
    Wake,
    Timer,
}

/// Logs a repeated warning at most once per [`LOG_INTERVAL`], with how many it stood for.
#[derive(Default)]
struct LogLimiter {
    /// When each kind of warning was last logged, and how many were held back since.
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogLimiter {
    /// Returns how many earlier events the line should also account for, or `None` to stay
    /// quiet now.
    fn admit(&mut self, key: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            Some((logged, held_back)) if now.duration_since(*logged) < LOG_INTERVAL => {
                *held_back += 1;
                None
            }
            Some(entry) => {
                let held_back = entry.1;
                *entry = (now, 0);
                Some(held_back)
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    records: Receiver<Record>,
    control: mpsc::UnboundedReceiver<Control>,
    control_open: bool,
    transport: Arc<Transport>,
    scores: Lane<Job>,
    traces: Lane<Job>,
    /// Records waiting for a retry (or a trace's grace period), by due time.
    delayed: BTreeMap<(Instant, u64), Job>,
    delayed_seq: u64,
    recent_traces: HashMap<Uuid, TraceState>,
    in_flight: FuturesUnordered<Sending>,
    barrier: FlushBarrier,
    /// Jobs in the worker's hands in any state; bounded by `window`.
    held: usize,
    window: usize,
    flushes: Vec<FlushWaiter>,
    shutdown: Option<ShutdownState>,
    next_tick: Instant,
    /// How long until the worker looks at the queue again on its own; `None` when asleep.
    poll: Option<Duration>,
    next_poll: Instant,
    /// Records taken at the last look, to tell whether records arrived since.
    taken_at_last_look: u64,
    logs: LogLimiter,
    queue_full_logged: u64,
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        records: Receiver<Record>,
        control: mpsc::UnboundedReceiver<Control>,
        transport: Transport,
    ) -> Worker {
        let config = &shared.config;
        let window = window(config);
        Worker {
            scores: Lane::new(config.retry_initial_backoff, config.max_retry_after),
            traces: Lane::new(config.retry_initial_backoff, config.max_retry_after),
            next_tick: Instant::now() + config.flush_interval,
            poll: None,
            next_poll: Instant::now(),
            taken_at_last_look: 0,
            shared,
            records,
            control,
            control_open: true,
            transport: Arc::new(transport),
            delayed: BTreeMap::new(),
            delayed_seq: 0,
            recent_traces: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            barrier: FlushBarrier::default(),
            held: 0,
            window,
            flushes: Vec::new(),
            shutdown: None,
            logs: LogLimiter::default(),
            queue_full_logged: 0,
        }
    }

    async fn run(mut self) {
        loop {
            let now = Instant::now();
            self.release_due(now);
            self.pull(now);
            self.keep_watch(now);
            self.dispatch(now);
            self.answer_flushes(now);
            if self.try_finish_shutdown(now) {
                break;
            }
            let deadline = self.next_deadline();
            let event = tokio::select! {
                biased;
                control = self.control.recv(), if self.control_open => Event::Control(control),
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    Event::Done(Box::new(done))
                }
                _ = self.shared.wake.notified() => Event::Wake,
                _ = tokio::time::sleep_until(deadline) => Event::Timer,
            };
            match event {
                Event::Control(Some(control)) => self.on_control(control),
                Event::Control(None) => {
                    // Every handle is gone without a shutdown request: shut down anyway.
                    self.control_open = false;
                    let timeout = self.shared.config.shutdown_timeout;
                    self.begin_shutdown(timeout, None);
                }
                Event::Done(done) => self.on_done(*done),
                Event::Wake => {
                    // Keep watching for a while, so that the flag the producer set is cleared
                    // again by the poll sequence even if nothing could be taken just now.
                    if self.poll.is_none() {
                        self.poll = Some(FIRST_POLL);
                        self.next_poll = Instant::now() + FIRST_POLL;
                    }
                }
                Event::Timer => {}
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.on_tick(now);
            }
        }
        self.shared.counters.mark_worker_stopped();
    }

    /// Polls the queue while records keep arriving (see [`FIRST_POLL`]), sleeps once they stop.
    fn keep_watch(&mut self, now: Instant) {
        if self.barrier.taken() != self.taken_at_last_look {
            self.taken_at_last_look = self.barrier.taken();
            let first = FIRST_POLL.min(self.shared.config.flush_interval);
            self.poll = Some(first);
            self.next_poll = now + first;
            self.shared.awake.store(true, Ordering::SeqCst);
            return;
        }
        let Some(poll) = self.poll else {
            return;
        };
        if now < self.next_poll {
            return;
        }
        let poll = poll * 2;
        if poll <= LAST_POLL {
            self.poll = Some(poll);
            self.next_poll = now + poll;
            return;
        }
        self.poll = None;
        self.shared.awake.store(false, Ordering::SeqCst);
        // A record that came in while producers still saw the worker awake is taken now.
        self.pull(now);
        if self.barrier.taken() != self.taken_at_last_look {
            self.keep_watch(now);
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self.next_tick;
        if self.poll.is_some() {
            deadline = deadline.min(self.next_poll);
        }
        if let Some(((due, _), _)) = self.delayed.first_key_value() {
            deadline = deadline.min(*due);
        }
        for until in [self.scores.wake_at(), self.traces.wake_at()]
            .into_iter()
            .flatten()
        {
            deadline = deadline.min(until);
        }
        for waiter in &self.flushes {
            deadline = deadline.min(waiter.deadline);
        }
        if let Some(shutdown) = &self.shutdown {
            deadline = deadline.min(shutdown.deadline);
        }
        deadline
    }

    fn lane(&mut self, kind: Kind) -> &mut Lane<Job> {
        match kind {
            Kind::Score => &mut self.scores,
            Kind::Trace => &mut self.traces,
        }
    }

    /// Takes records off the queue while the worker has room for them.
    fn pull(&mut self, now: Instant) {
        while self.held < self.window {
            let Ok(record) = self.records.try_recv() else {
                break;
            };
            let seq = self.barrier.take();
            match record {
                Record::Score(score) => {
                    let Some(trace_id) = score.trace_id() else {
                        // score() validated the id; should that ever change, still count it.
                        self.shared
                            .counters
                            .dropped(Kind::Score, DropReason::Rejected, 1);
                        continue;
                    };
                    let job =
                        self.new_job(Kind::Score, seq, trace_id, score_body(trace_id, &score));
                    self.admit_score(job, now);
                }
                Record::Trace(trace) => {
                    let trace_id = trace.trace_id;
                    let scores: Vec<Job> = trace
                        .scores
                        .iter()
                        .filter_map(|s| {
                            let id = s.trace_id()?;
                            Some(self.new_job(Kind::Score, seq, id, score_body(id, s)))
                        })
                        .collect();
                    let job = self.new_job(Kind::Trace, seq, trace_id, trace.body);
                    match self.recent_traces.get_mut(&trace_id) {
                        Some(TraceState::InFlight(held)) => held.extend(scores),
                        _ => {
                            self.recent_traces
                                .insert(trace_id, TraceState::InFlight(scores));
                        }
                    }
                    self.traces.ready.push_back(job);
                }
            }
        }
    }

    fn new_job(&mut self, kind: Kind, seq: u64, trace_id: Uuid, body: Vec<u8>) -> Job {
        self.barrier.open(seq);
        self.held += 1;
        let request_id = HeaderValue::from_str(
            Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
        )
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Job {
            kind,
            seq,
            trace_id,
            body: Bytes::from(body),
            request_id,
            attempts: 0,
            first_failure: None,
            backoff: None,
            fresh_connection: false,
        }
    }

    /// A score for a trace this client just sent waits until that trace is answered and a
    /// grace period has passed; any other score goes out at once.
    fn admit_score(&mut self, job: Job, now: Instant) {
        match self.recent_traces.get_mut(&job.trace_id) {
            Some(TraceState::InFlight(held)) => held.push(job),
            Some(TraceState::Answered { release_at }) if *release_at > now => {
                let due = *release_at;
                self.delay(due, job);
            }
            _ => self.scores.ready.push_back(job),
        }
    }

    fn delay(&mut self, due: Instant, job: Job) {
        self.delayed_seq += 1;
        self.delayed.insert((due, self.delayed_seq), job);
    }

    /// Moves records whose wait is over to their lane.
    fn release_due(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.lane(job.kind).ready.push_back(job);
        }
    }

    /// Starts requests while there is room in flight, taking from the two endpoints in turn
    /// so that neither can starve the other. (Scores waiting on a trace are not in a lane.)
    fn dispatch(&mut self, now: Instant) {
        let max = self.shared.config.max_in_flight;
        self.scores.expire_pause(now);
        self.traces.expire_pause(now);
        let mut progressed = true;
        while progressed && self.in_flight.len() < max {
            progressed = false;
            for kind in [Kind::Trace, Kind::Score] {
                if self.in_flight.len() < max && self.lane(kind).can_send() {
                    self.start_request(kind);
                    progressed = true;
                }
            }
        }
    }

    fn start_request(&mut self, kind: Kind) {
        let lane = self.lane(kind);
        let Some(mut job) = lane.ready.pop_front() else {
            return;
        };
        lane.in_flight += 1;
        job.attempts += 1;
        let url = match kind {
            Kind::Score => self.shared.config.scores_url.clone(),
            Kind::Trace => self.shared.config.traces_url.clone(),
        };
        let transport = Arc::clone(&self.transport);
        self.in_flight.push(Box::pin(async move {
            let send = transport.send(
                url,
                job.body.clone(),
                job.request_id.clone(),
                job.fresh_connection,
            );
            // The transport does not panic; should it ever, the record is retried, not lost.
            let attempt = AssertUnwindSafe(send)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Attempt::Failed {
                    ambiguous: true,
                    message: "the HTTP client panicked".into(),
                });
            (job, attempt)
        }));
        self.shared.counters.request();
    }

    fn on_done(&mut self, (job, attempt): (Job, Attempt)) {
        let now = Instant::now();
        self.lane(job.kind).in_flight -= 1;
        match decide(&attempt) {
            Decision::Delivered => {
                self.lane(job.kind).delivered();
                self.log_outcome(&job, &attempt, "delivered");
                if job.kind == Kind::Trace {
                    self.trace_answered(job.trace_id, true, now);
                }
                self.finish(job.kind, job.seq, None);
            }
            Decision::Reject => self.drop_job(job, &attempt, DropReason::Rejected, now),
            Decision::Retry(hint) => self.retry(job, &attempt, hint, now),
        }
    }

    fn retry(&mut self, mut job: Job, attempt: &Attempt, hint: RetryHint, now: Instant) {
        let RetryHint {
            after,
            pause_endpoint,
            fresh_connection,
            ambiguous,
        } = hint;
        let config = &self.shared.config;
        let first_failure = *job.first_failure.get_or_insert(now);
        let out_of_time = now.duration_since(first_failure) >= config.retry_max_elapsed;
        // A 429 says "not now", not "failed": it is bounded by the retry time, not the count.
        let out_of_tries = !pause_endpoint && job.attempts > config.max_retries;
        if out_of_time || out_of_tries {
            self.drop_job(job, attempt, DropReason::RetriesExhausted, now);
            return;
        }
        let cap = config.max_retry_after;
        job.fresh_connection |= fresh_connection;
        self.shared.counters.retried(job.kind, ambiguous);
        self.log_outcome(&job, attempt, "will retry");
        if pause_endpoint {
            self.lane(job.kind).rate_limited(job, after, now);
            return;
        }
        let backoff = job.backoff.get_or_insert_with(|| ExponentialBackoff {
            current_interval: config.retry_initial_backoff,
            initial_interval: config.retry_initial_backoff,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: config.retry_max_backoff,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        });
        let wait = match after {
            Some(server_says) => server_says.min(cap),
            None => backoff.next_backoff().unwrap_or(config.retry_max_backoff),
        };
        self.delay(now + wait, job);
    }

    fn drop_job(&mut self, job: Job, attempt: &Attempt, reason: DropReason, now: Instant) {
        let key = match reason {
            DropReason::Rejected => "rejected",
            _ => "exhausted",
        };
        if let Some(also) = self.logs.admit(key, now) {
            tracing::warn!(
                target: "pandaprobe",
                kind = ?job.kind,
                attempts = job.attempts,
                "dropped a {:?} record ({}): {}{}",
                job.kind,
                reason.as_str(),
                describe(attempt),
                if also > 0 { format!(" (and {also} more like it since the last report)") } else { String::new() },
            );
        }
        if job.kind == Kind::Trace {
            self.trace_answered(job.trace_id, false, now);
        }
        self.finish(job.kind, job.seq, Some(reason));
    }

    fn log_outcome(&self, job: &Job, attempt: &Attempt, outcome: &str) {
        if self.shared.config.debug {
            tracing::info!(target: "pandaprobe", request_id = ?job.request_id, attempt = job.attempts, "{:?} {outcome}: {}", job.kind, describe(attempt));
        } else {
            tracing::debug!(target: "pandaprobe", request_id = ?job.request_id, attempt = job.attempts, "{:?} {outcome}: {}", job.kind, describe(attempt));
        }
    }

    /// Releases the scores held for a trace: after the grace period if it was stored, at once
    /// otherwise (they may still succeed if the trace was stored earlier).
    fn trace_answered(&mut self, trace_id: Uuid, stored: bool, now: Instant) {
        let Some(TraceState::InFlight(held)) = self.recent_traces.remove(&trace_id) else {
            return;
        };
        let release_at = now + self.shared.config.trace_score_delay;
        if stored {
            self.recent_traces
                .insert(trace_id, TraceState::Answered { release_at });
        }
        for job in held {
            if stored {
                self.delay(release_at, job);
            } else {
                self.scores.ready.push_back(job);
            }
        }
    }

    /// Counts one job's outcome and forgets it.
    fn finish(&mut self, kind: Kind, seq: u64, dropped: Option<DropReason>) {
        match dropped {
            None => self.shared.counters.sent(kind),
            Some(reason) => self.shared.counters.dropped(kind, reason, 1),
        }
        self.barrier.close(seq);
        self.held -= 1;
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Flush { timeout, reply } => {
                if self.shutdown.is_some() {
                    reply.send(Err(FlushError::ShutDown));
                    return;
                }
                // Everything queued before this request is ahead of `target` in queue order.
                let target = self.barrier.taken() + self.records.len() as u64;
                self.flushes.push(FlushWaiter {
                    target,
                    deadline: deadline_after(timeout),
                    timeout,
                    reply,
                });
            }
            Control::Shutdown { timeout, reply } => self.begin_shutdown(timeout, Some(reply)),
        }
    }

    fn begin_shutdown(&mut self, timeout: Duration, reply: Option<Reply>) {
        self.shared.closed.store(true, Ordering::Release);
        let deadline = deadline_after(timeout);
        let state = self.shutdown.get_or_insert(ShutdownState {
            deadline,
            timeout,
            replies: Vec::new(),
        });
        if deadline < state.deadline {
            state.deadline = deadline;
            state.timeout = timeout;
        }
        state.replies.extend(reply);
    }

    fn answer_flushes(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.flushes.len() {
            let waiter = &self.flushes[i];
            let done = self.barrier.passed(waiter.target);
            if done || now >= waiter.deadline {
                let waiter = self.flushes.swap_remove(i);
                let result = if done {
                    Ok(())
                } else {
                    Err(FlushError::Timeout {
                        pending: self.barrier.pending_before(waiter.target),
                        timeout: waiter.timeout,
                    })
                };
                waiter.reply.send(result);
            } else {
                i += 1;
            }
        }
    }

    /// Ends the run once shutdown has delivered everything, or its deadline has passed.
    fn try_finish_shutdown(&mut self, now: Instant) -> bool {
        let Some(state) = &self.shutdown else {
            return false;
        };
        let drained = self.held == 0 && self.records.is_empty();
        if !drained && now < state.deadline {
            return false;
        }
        let Some(state) = self.shutdown.take() else {
            return false;
        };
        let abandoned = self.abandon_all();
        if abandoned > 0 {
            tracing::warn!(
                target: "pandaprobe",
                "shutdown: {abandoned} record(s) not delivered within {:?} were dropped",
                state.timeout
            );
        }
        let result = if abandoned == 0 {
            Ok(())
        } else {
            Err(FlushError::Timeout {
                pending: abandoned,
                timeout: state.timeout,
            })
        };
        let _ = self.shared.final_result.set(result.clone());
        for reply in state.replies {
            reply.send(result.clone());
        }
        for waiter in self.flushes.drain(..) {
            waiter.reply.send(Err(FlushError::ShutDown));
        }
        self.log_queue_full(now, true);
        true
    }

    /// Drops everything still held or queued, counting each record as dropped at shutdown.
    fn abandon_all(&mut self) -> u64 {
        // Answers that have already arrived count as what they are, not as abandoned.
        while let Some(Some(done)) = self.in_flight.next().now_or_never() {
            self.on_done(done);
        }
        self.in_flight.clear();
        let mut by_kind = [0u64; 2];
        let slot = |kind: Kind| match kind {
            Kind::Score => 0,
            Kind::Trace => 1,
        };
        for (kind, lane) in [
            (Kind::Score, &mut self.scores),
            (Kind::Trace, &mut self.traces),
        ] {
            by_kind[slot(kind)] += (lane.ready.len() + lane.in_flight) as u64;
            lane.ready.clear();
            lane.in_flight = 0;
        }
        for job in std::mem::take(&mut self.delayed).into_values() {
            by_kind[slot(job.kind)] += 1;
        }
        for state in std::mem::take(&mut self.recent_traces).into_values() {
            if let TraceState::InFlight(jobs) = state {
                by_kind[slot(Kind::Score)] += jobs.len() as u64;
            }
        }
        while let Ok(record) = self.records.try_recv() {
            match record {
                Record::Score(_) => by_kind[slot(Kind::Score)] += 1,
                Record::Trace(trace) => {
                    by_kind[slot(Kind::Trace)] += 1;
                    by_kind[slot(Kind::Score)] += trace.scores.len() as u64;
                }
            }
        }
        self.barrier.clear();
        self.held = 0;
        let counters = &self.shared.counters;
        counters.dropped(Kind::Score, DropReason::Shutdown, by_kind[0]);
        counters.dropped(Kind::Trace, DropReason::Shutdown, by_kind[1]);
        by_kind[0] + by_kind[1]
    }

    fn on_tick(&mut self, now: Instant) {
        let interval = self.shared.config.flush_interval;
        self.next_tick = now + interval;
        self.recent_traces.retain(|_, state| match state {
            TraceState::InFlight(_) => true,
            TraceState::Answered { release_at } => *release_at > now,
        });
        self.log_queue_full(now, false);
    }

    fn log_queue_full(&mut self, now: Instant, force: bool) {
        let total = self.shared.counters.queue_full_total();
        let new = total - self.queue_full_logged;
        if new == 0 {
            return;
        }
        if force || self.logs.admit("queue_full", now).is_some() {
            self.queue_full_logged = total;
            tracing::warn!(
                target: "pandaprobe",
                "dropped {new} record(s) because the queue was full (max_queue_size = {}); \
                 raise it, or lower the scoring rate",
                self.shared.config.max_queue_size
            );
        }
    }
}

/// How many records the worker holds at most (in flight, waiting for a retry, a trace or its
/// grace period). It takes records off the queue only below this, so a dead server cannot make
/// retries grow without bound: the queue fills and `score()` drops instead. Room enough that a
/// few records stuck in long retries do not stall the rest, yet never more than the queue
/// itself holds (or twice the requests in flight, for a tiny queue).
pub(crate) fn window(config: &Config) -> usize {
    let roomy = (config.max_in_flight * 4)
        .max(config.batch_size * 2)
        .max(1024);
    roomy.min(config.max_queue_size.max(config.max_in_flight * 2))
}

fn describe(attempt: &Attempt) -> String {
    match attempt {
        Attempt::Answered {
            status, message, ..
        } => format!("HTTP {status}: {message}"),
        Attempt::Failed { message, .. } => message.clone(),
    }
}

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365))
}
