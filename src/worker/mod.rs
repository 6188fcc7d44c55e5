//! The background worker's event loop, which moves records from the queue to the server, on
//! its own thread and runtime (`thread`). Every rule lives in a part it calls:
//!
//! - `intake`: records taken off the queue; `wake`: when to look at it; `job`: a record in hand;
//! - `trace_gate` (with `readiness`): scores and added spans held until the server says their
//!   trace is stored;
//! - `lane` (with `rate_window`): each endpoint's line and its rate limit;
//! - `retry` (with `retry_queue`): what an answer means, and when to try again;
//! - `flush_barrier`, `waiters`: what flush and shutdown wait for, and their deadlines;
//! - `losses` (with `log_limiter`): every drop counted, hooked and logged;
//! - `transport`: one request (`in_memory`: a capturing client's answer instead); `outcome`:
//!   what its answer does; `ending`: shutdown and panics.

mod ending;
mod flush_barrier;
mod in_memory;
mod intake;
mod job;
mod lane;
mod log_limiter;
mod losses;
mod outcome;
mod rate_window;
mod readiness;
mod retry;
mod retry_queue;
pub(crate) mod thread;
mod trace_gate;
mod transport;
mod waiters;
mod wake;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::Config;
use crate::drop_event::{DropReason, RecordKind};
use crate::error::Waiting;
use crate::protocol::{Control, Shared};
use crate::record::{Notice, Record};
use flush_barrier::FlushBarrier;
use job::Job;
use lane::Lane;
use losses::Losses;
use rate_window::RateWindow;
use retry::RetryPolicy;
use retry_queue::RetryQueue;
use trace_gate::TraceGate;
use transport::{Attempt, Transport};
use waiters::Waiters;
use wake::{Poller, Watch};

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

/// The request lines, each with its own rate-limit window: scores, traces, and spans added
/// to stored traces.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Score,
    Trace,
    Spans,
}

impl Route {
    fn of(job: &Job) -> Route {
        match job.kind {
            _ if job.chunk > 0 => Route::Spans,
            RecordKind::Score => Route::Score,
            RecordKind::Trace => Route::Trace,
        }
    }

    /// The line whose turn comes after this one.
    fn next(self) -> Route {
        match self {
            Route::Trace => Route::Score,
            Route::Score => Route::Spans,
            Route::Spans => Route::Trace,
        }
    }
}

enum Event {
    Control(Option<Control>),
    Done(u64, Attempt),
    Wake,
    Timer,
}

struct Worker {
    shared: Arc<Shared>,
    records: Receiver<Record>,
    notices: Receiver<Notice>,
    control: mpsc::UnboundedReceiver<Control>,
    control_open: bool,
    transport: Transport,
    policy: RetryPolicy,
    scores: Lane<Job>,
    traces: Lane<Job>,
    spans: Lane<Job>,
    retries: RetryQueue<Job>,
    gate: TraceGate<Job>,
    /// Jobs whose request is under way, by key; their futures hold only copies of the bytes.
    sending: HashMap<u64, Job>,
    /// Readiness probes under way, by key: the trace each asks about.
    probes: HashMap<u64, Uuid>,
    in_flight: FuturesUnordered<Sending>,
    next_key: u64,
    barrier: FlushBarrier,
    waiters: Waiters,
    poller: Poller,
    losses: Losses,
    /// The lane whose turn it is to send.
    next_lane: Route,
    window: usize,
    next_tick: Instant,
    /// Set when a turn's intake stopped at its bound with records still queued: the loop looks
    /// at its control channel, then goes on at once.
    more_to_take: bool,
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        records: Receiver<Record>,
        notices: Receiver<Notice>,
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
        let (scores, traces, spans) = (
            lane(config.scores_rate_limit),
            lane(config.traces_rate_limit),
            lane(None),
        );
        let policy = RetryPolicy::new(config);
        let gate = TraceGate::new(config.max_queue_size, config.retry_max_elapsed);
        let poller = Poller::new(config.flush_interval, now);
        let (window, next_tick) = (window(config), now + config.flush_interval);
        Worker {
            scores,
            traces,
            spans,
            policy,
            gate,
            poller,
            window,
            next_tick,
            losses: Losses::new(Arc::clone(&shared)),
            shared,
            records,
            notices,
            control,
            control_open: true,
            transport,
            retries: RetryQueue::default(),
            sending: HashMap::new(),
            probes: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            next_key: 0,
            barrier: FlushBarrier::default(),
            waiters: Waiters::default(),
            next_lane: Route::Trace,
            more_to_take: false,
        }
    }

    async fn run(&mut self) {
        loop {
            let now = Instant::now();
            self.pull(now);
            self.release_due(now);
            self.watch(now);
            self.dispatch(now);
            if self.waiters.has_flushes() {
                let waiting = self.waiting();
                self.waiters.answer_flushes(&self.barrier, now, waiting);
            }
            if self.waiters.shutdown_due(self.drained(), now) {
                self.finish_shutdown(now);
                break;
            }
            let deadline = self.next_deadline(now);
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

    fn lane(&mut self, route: Route) -> &mut Lane<Job> {
        match route {
            Route::Score => &mut self.scores,
            Route::Trace => &mut self.traces,
            Route::Spans => &mut self.spans,
        }
    }

    /// A job released by the trace gate goes to its line, in hand again.
    fn release(&mut self, job: Job) {
        self.lane(Route::of(&job)).push(job);
    }

    /// Retries whose time has come, and the scores of traces left open too long.
    fn release_due(&mut self, now: Instant) {
        while let Some(job) = self.retries.pop_due(now) {
            self.lane(Route::of(&job)).push(job);
        }
        for job in self.gate.due_open(now) {
            // Flushes wait for them again.
            self.barrier.open(job.seq);
            self.release(job);
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

    /// Starts requests while there is room in flight: readiness probes first (small, and what
    /// they release waits on them), then the three lines in turn, across calls
    /// too, so that none can starve another when slots free one at a time.
    fn dispatch(&mut self, now: Instant) {
        let max = self.shared.config.max_in_flight;
        self.start_probes(now, max.saturating_sub(self.in_flight.len()));
        let mut idle_lanes = 0;
        while idle_lanes < 3 && self.in_flight.len() < max {
            let route = self.next_lane;
            self.next_lane = route.next();
            match self.lane(route).next(now) {
                Some(job) => {
                    self.start(job, now);
                    idle_lanes = 0;
                }
                None => idle_lanes += 1,
            }
        }
    }

    fn start(&mut self, mut job: Job, now: Instant) {
        job.sent_at = now;
        let config = &self.shared.config;
        let url = match Route::of(&job) {
            Route::Score => Some(config.scores_url.clone()),
            Route::Trace => Some(config.traces_url.clone()),
            Route::Spans => config.trace_url(job.trace_id, &["spans"]),
        };
        let Some(url) = url else {
            // Never for an endpoint the builder accepted; should it happen, it is counted.
            let route = Route::of(&job);
            self.lane(route)
                .finished(now, now, rate_window::Answer::Other);
            self.finish(job, Some(DropReason::Rejected), now);
            return;
        };
        if let Some(capture) = config.capture.clone() {
            self.answer_in_memory(&capture, job);
            return;
        }
        let client = self.transport.client(job.retry.fresh_connection());
        let (body, request_id) = (job.body.clone(), job.request_id.clone());
        let key = self.launch(client, url, Some(body), request_id);
        self.sending.insert(key, job);
        self.shared.counters.request();
    }

    /// Puts one request under way; returns its key.
    fn launch(
        &mut self,
        client: reqwest::Client,
        url: reqwest::Url,
        body: Option<bytes::Bytes>,
        request_id: reqwest::header::HeaderValue,
    ) -> u64 {
        let redactor = self.transport.redactor.clone();
        let key = self.next_key;
        self.next_key += 1;
        self.in_flight.push(Box::pin(async move {
            // The transport does not panic; should it ever, the record is retried, not lost.
            let attempt =
                AssertUnwindSafe(transport::send(client, url, body, request_id, redactor))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Attempt::Failed {
                        ambiguous: true,
                        message: "the HTTP client panicked".into(),
                    });
            (key, attempt)
        }));
        key
    }

    /// Where what the worker holds is, for a flush or shutdown that timed out.
    fn waiting(&self) -> Waiting {
        let mut waiting = Waiting {
            for_trace: self.gate.held() as u64,
            for_retry: self.retries.len() as u64,
            in_flight: self.sending.len() as u64,
            queued: self.records.len() as u64,
            ..Waiting::default()
        };
        for lane in [&self.scores, &self.traces, &self.spans] {
            match lane.is_paused() {
                true => waiting.for_rate_limit += lane.ready() as u64,
                false => waiting.queued += lane.ready() as u64,
            }
        }
        waiting
    }

    /// Jobs in hand outside the trace gate (ready in a lane, under way, waiting for a retry);
    /// intake keeps it under `window`. Derived from where the jobs are, so that no count kept
    /// beside them can drift (or underflow and stop intake).
    fn in_hand(&self) -> usize {
        self.scores.ready()
            + self.traces.ready()
            + self.spans.ready()
            + self.sending.len()
            + self.retries.len()
    }

    fn drained(&self) -> bool {
        self.in_hand() == 0 && self.gate.held() == 0 && self.records.is_empty()
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        [
            self.poller.next_look(),
            self.retries.next_due(),
            self.scores.wake_at(),
            self.traces.wake_at(),
            self.spans.wake_at(),
            self.gate.next_due(),
            self.waiters.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .chain(self.more_to_take.then_some(now))
        .fold(self.next_tick, Instant::min)
    }
}
