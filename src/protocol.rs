//! The protocol between the callers' threads and the worker: what they share (the client's
//! state, counters, the wake-up) and the control messages with their replies. Below both the
//! producer side and the worker, so that neither imports the other.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::budget::Budget;
use crate::config::Config;
use crate::drop_event::DropEvent;
use crate::error::{FlushError, ScoreError};
use crate::fork;
use crate::stats::Counters;

/// Extra time a blocking caller waits beyond its timeout for the worker's answer: the worker
/// enforces the deadline itself (it looks at its control channel between bounded turns), so
/// this only covers its answer's way back; past it the caller reports the timeout itself.
pub(crate) fn answer_slack(timeout: Duration) -> Duration {
    (timeout / 20).min(Duration::from_millis(200)) + Duration::from_millis(30)
}

/// Whether records are still taken.
const OPEN: u8 = 0;
/// Shutdown has begun.
const CLOSED: u8 = 1;
/// The worker died of a panic.
const DEAD: u8 = 2;

/// State shared by the client handles and the worker. The worker never holds a client handle,
/// so dropping the last one is what shuts it down.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Bytes held for delivery, against `max_queue_bytes`.
    pub(crate) budget: Arc<Budget>,
    /// The fork generation the client was made in: in a forked child it differs.
    fork_generation: u64,
    /// Set while the worker is polling the queue on its own, or once a producer has woken it;
    /// producers that find it set skip the wake-up. Cleared by the worker when it goes to sleep.
    /// So: at most one wake-up per batch however many producers cross the threshold, and none
    /// at all under steady load.
    awake: AtomicBool,
    wake: Notify,
    state: AtomicU8,
    /// Producers inside `enqueue` now: the worker waits for none to be left before its last
    /// look at the queue, so that no record lands in it after that look (and is freed with
    /// the channel, unreported).
    pub(crate) enqueuing: AtomicUsize,
    /// The outcome of the shutdown, for later `shutdown()` calls.
    final_result: OnceLock<Result<(), FlushError>>,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            budget: Budget::new(config.max_queue_bytes),
            fork_generation: fork::generation(),
            config,
            counters: Counters::default(),
            awake: AtomicBool::new(false),
            wake: Notify::new(),
            state: AtomicU8::new(OPEN),
            enqueuing: AtomicUsize::new(0),
            final_result: OnceLock::new(),
        }
    }

    /// Wakes the worker unless a wake-up is already on its way.
    pub(crate) fn wake_worker(&self) {
        if !self.awake.load(Ordering::SeqCst) && !self.awake.swap(true, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Producers skip wake-ups from now on (the worker is polling).
    pub(crate) fn keep_awake(&self) {
        self.awake.store(true, Ordering::SeqCst);
    }

    /// The worker goes to sleep: the next producer to cross a threshold wakes it.
    pub(crate) fn let_sleep(&self) {
        self.awake.store(false, Ordering::SeqCst);
    }

    /// Resolves when a producer wakes the worker.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    // The state and `enqueuing` are read and written in one total order (`SeqCst`): a producer
    // that counts itself in after the worker read "none inside" then reads the closed state.
    pub(crate) fn close(&self) {
        let _ = self
            .state
            .compare_exchange(OPEN, CLOSED, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub(crate) fn mark_dead(&self) {
        self.state.store(DEAD, Ordering::SeqCst);
        self.counters.mark_worker_died();
    }

    /// Whether a producer is inside `enqueue` now.
    pub(crate) fn enqueuing(&self) -> bool {
        self.enqueuing.load(Ordering::SeqCst) > 0
    }

    /// Whether this process is a fork of the one that made the client.
    pub(crate) fn forked(&self) -> bool {
        fork::forked_since(self.fork_generation)
    }

    pub(crate) fn refusal(&self) -> Option<ScoreError> {
        if self.forked() {
            return Some(ScoreError::Forked);
        }
        match self.state.load(Ordering::SeqCst) {
            OPEN => None,
            CLOSED => Some(ScoreError::ShutDown),
            _ => Some(ScoreError::WorkerDied),
        }
    }

    pub(crate) fn set_final_result(&self, result: Result<(), FlushError>) {
        let _ = self.final_result.set(result);
    }

    pub(crate) fn final_result(&self) -> Result<(), FlushError> {
        match self.final_result.get() {
            Some(result) => result.clone(),
            None if self.state.load(Ordering::Acquire) == DEAD => Err(FlushError::WorkerDied),
            None => Ok(()),
        }
    }

    /// Passes a drop to the hook, on the caller's thread, catching a panic in it.
    pub(crate) fn call_hook(&self, event: &DropEvent) -> bool {
        let Some(hook) = &self.config.on_drop else {
            return true;
        };
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (hook.0)(event)));
        if called.is_err() {
            self.counters.hook_panicked();
        }
        called.is_ok()
    }
}

/// Where the worker sends a flush's or shutdown's outcome: a blocking caller or an async one.
pub(crate) enum Reply {
    Blocking(crossbeam_channel::Sender<Result<(), FlushError>>),
    Async(oneshot::Sender<Result<(), FlushError>>),
}

impl Reply {
    /// Whether the caller has stopped waiting (a dropped `flush_async` future).
    pub(crate) fn is_abandoned(&self) -> bool {
        match self {
            Reply::Blocking(_) => false,
            Reply::Async(tx) => tx.is_closed(),
        }
    }

    pub(crate) fn send(self, result: Result<(), FlushError>) {
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

pub(crate) type MakeControl = fn(Duration, Reply) -> Control;

pub(crate) fn flush_request(timeout: Duration, reply: Reply) -> Control {
    Control::Flush { timeout, reply }
}

pub(crate) fn shutdown_request(timeout: Duration, reply: Reply) -> Control {
    Control::Shutdown { timeout, reply }
}
