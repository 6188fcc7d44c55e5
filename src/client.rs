//! The client handle: validates, enqueues, and talks to the worker for flush and shutdown.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use tokio::sync::{mpsc, oneshot};

use crate::config::{ClientBuilder, Config, QueueFullPolicy};
use crate::error::{ConfigError, FlushError, ScoreError};
use crate::record::Record;
use crate::score::Score;
use crate::stats::{DropReason, Kind, Stats};
use crate::worker::{self, Control, Reply, Shared};

/// Extra time a blocking caller waits beyond its timeout for the worker's answer: the worker
/// enforces the deadline itself, this only guards against a worker that is gone.
const ANSWER_SLACK: Duration = Duration::from_millis(250);

/// A handle to a PandaProbe client: cheap to clone, `Send + Sync`; all clones share one queue
/// and one worker thread. Dropping the last handle shuts the worker down, delivering what is
/// queued within [`ClientBuilder::shutdown_timeout`].
///
/// ```
/// use std::time::Duration;
/// use pandaprobe::{Client, Score};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder().enabled(false).build()?; // a real one needs a key and project
/// client.score(Score::numeric(uuid::Uuid::new_v4(), "relevance", 0.9))?;
/// client.flush(Duration::from_secs(10))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    shared: Arc<Shared>,
    records: Sender<Record>,
    control: mpsc::UnboundedSender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Disconnects when the worker thread is about to exit.
    exited: crossbeam_channel::Receiver<()>,
}

impl Client {
    /// A builder with the defaults only (see [`ClientBuilder`]).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client configured from the `PANDAPROBE_*` environment variables alone.
    pub fn from_env() -> Result<Client, ConfigError> {
        ClientBuilder::from_env().build()
    }

    /// A client that accepts and discards everything, at no cost and with no thread.
    pub fn disabled() -> Client {
        Client { inner: None }
    }

    pub(crate) fn start(config: Config) -> Result<Client, ConfigError> {
        let (records, queue) = crossbeam_channel::bounded(config.max_queue_size);
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(config));
        let (thread, exited) = worker::spawn(Arc::clone(&shared), queue, control_rx)?;
        Ok(Client {
            inner: Some(Arc::new(Inner {
                shared,
                records,
                control,
                thread: Mutex::new(Some(thread)),
                exited,
            })),
        })
    }

    pub(crate) fn same_as(&self, other: &Client) -> bool {
        match (&self.inner, &other.inner) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    pub(crate) fn shutdown_timeout(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |inner| inner.shared.config.shutdown_timeout)
    }

    /// `false` for a disabled client.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Validates a score and queues it for delivery; never blocks (unless
    /// [`QueueFullPolicy::Block`] is configured) and never touches the network.
    ///
    /// An invalid score is refused with the reason and nothing is queued. A full queue or a
    /// shut-down client drops the score, counts it in [`Stats`] and says so in the error.
    #[inline]
    pub fn score(&self, score: Score) -> Result<(), ScoreError> {
        // Inlined down to this check, so a disabled client costs the caller next to nothing.
        match &self.inner {
            Some(inner) => inner.score(score),
            None => Ok(()),
        }
    }

    /// Queues an ended trace (with the scores that wait for it). Never fails: a trace that
    /// cannot be queued is counted as dropped.
    pub(crate) fn enqueue_trace(&self, record: Record) {
        if let Some(inner) = &self.inner {
            let _ = inner.enqueue(record);
        }
    }

    /// Counts scores held by an open trace as accepted: they are now the SDK's to deliver.
    pub(crate) fn accept_held(&self, n: u64) {
        if let Some(inner) = &self.inner {
            inner.shared.counters.accepted(Kind::Score, n);
        }
    }

    /// Counts spans left out of a trace over the server's limit.
    pub(crate) fn spans_dropped(&self, n: u64) {
        if let Some(inner) = &self.inner {
            inner.shared.counters.spans_dropped(n);
        }
    }

    /// Sent with every trace, from the configuration.
    pub(crate) fn environment_and_release(&self) -> (Option<&str>, Option<&str>) {
        match &self.inner {
            Some(inner) => (
                inner.shared.config.environment.as_deref(),
                inner.shared.config.release.as_deref(),
            ),
            None => (None, None),
        }
    }

    /// Blocks until every record whose `score()` (or trace end) returned before this call has
    /// been delivered or dropped, or until `timeout`. Works from any thread, inside or outside
    /// a tokio runtime; the worker enforces the deadline.
    ///
    /// On timeout the error says how many records were still pending; they stay queued.
    /// Scores held by a trace that has not ended yet are not waited for.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        inner.request_blocking(timeout, |timeout, reply| Control::Flush { timeout, reply })
    }

    /// [`flush`](Self::flush) for async callers: awaits without blocking a thread, on any
    /// executor.
    pub async fn flush_async(&self, timeout: Duration) -> Result<(), FlushError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        if inner
            .control
            .send(Control::Flush {
                timeout,
                reply: Reply::Async(reply),
            })
            .is_err()
        {
            return Err(FlushError::ShutDown);
        }
        answer.await.unwrap_or(Err(FlushError::ShutDown))
    }

    /// Stops accepting records, delivers what is queued within `timeout`, drops and counts the
    /// rest, and stops the worker thread. Idempotent: later calls return the first outcome.
    /// Affects every clone of this handle.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        match &self.inner {
            Some(inner) => inner.shutdown(timeout),
            None => Ok(()),
        }
    }

    /// [`shutdown`](Self::shutdown) for async callers. The worker thread finishes on its own
    /// right after answering; it is joined when the last handle is dropped.
    pub async fn shutdown_async(&self, timeout: Duration) -> Result<(), FlushError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        inner.shared.closed.store(true, Ordering::Release);
        let (reply, answer) = oneshot::channel();
        if inner
            .control
            .send(Control::Shutdown {
                timeout,
                reply: Reply::Async(reply),
            })
            .is_err()
        {
            return inner.final_result();
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => inner.final_result(),
        }
    }

    /// A snapshot of the counters: accepted, sent, retried, pending and dropped by reason,
    /// for scores and traces apart. All zero for a disabled client.
    pub fn stats(&self) -> Stats {
        match &self.inner {
            Some(inner) => inner.shared.counters.snapshot(),
            None => Stats::default(),
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.debug_struct("Client").field("enabled", &false).finish(),
            Some(inner) => f
                .debug_struct("Client")
                .field("enabled", &true)
                .field("endpoint", &inner.shared.config.scores_url.origin())
                .field("project_name", &inner.shared.config.project_name)
                .field("stats", &inner.shared.counters.snapshot())
                .finish(),
        }
    }
}

impl Inner {
    #[inline(never)]
    fn score(&self, score: Score) -> Result<(), ScoreError> {
        score.validate()?;
        self.enqueue(Record::Score(score))
    }

    fn enqueue(&self, record: Record) -> Result<(), ScoreError> {
        let shared = &*self.shared;
        let before = shared.counters.accepted(record.kind(), 1);
        if shared.closed.load(Ordering::Acquire) {
            self.count_dropped(&record, DropReason::Shutdown);
            return Err(ScoreError::ShutDown);
        }
        let full = match self.records.try_send(record) {
            Ok(()) => None,
            Err(TrySendError::Full(record)) => {
                // A full queue must be drained now, not at the next tick: the batch-threshold
                // wake-up below never fires while every send fails (nor when `batch_size`
                // exceeds `max_queue_size`). Deduplicated like every wake-up.
                shared.wake_worker();
                match shared.config.queue_full {
                    QueueFullPolicy::DropNew => Some(record),
                    QueueFullPolicy::Block(timeout) => {
                        match self.records.send_timeout(record, timeout) {
                            Ok(()) => None,
                            Err(SendTimeoutError::Timeout(record)) => Some(record),
                            Err(SendTimeoutError::Disconnected(record)) => {
                                self.count_dropped(&record, DropReason::Shutdown);
                                return Err(ScoreError::ShutDown);
                            }
                        }
                    }
                }
            }
            Err(TrySendError::Disconnected(record)) => {
                self.count_dropped(&record, DropReason::Shutdown);
                return Err(ScoreError::ShutDown);
            }
        };
        if let Some(record) = full {
            self.count_dropped(&record, DropReason::QueueFull);
            return Err(ScoreError::QueueFull);
        }
        // One wake-up per `batch_size` records at most; otherwise the worker's interval timer
        // picks them up. Counting acceptances, rather than asking the queue its length, keeps
        // the caller off the cache line the worker writes.
        if (before + 1).is_multiple_of(shared.config.batch_size as u64) {
            shared.wake_worker();
        }
        Ok(())
    }

    fn count_dropped(&self, record: &Record, reason: DropReason) {
        let counters = &self.shared.counters;
        counters.dropped(record.kind(), reason, 1);
        if let Record::Trace(trace) = record {
            counters.dropped(Kind::Score, reason, trace.scores.len() as u64);
        }
    }

    /// Sends a request to the worker and waits for its answer, on a plain channel: this works
    /// with no runtime and inside any runtime, since the worker runs on its own.
    fn request_blocking(
        &self,
        timeout: Duration,
        make: impl FnOnce(Duration, Reply) -> Control,
    ) -> Result<(), FlushError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self
            .control
            .send(make(timeout, Reply::Blocking(reply)))
            .is_err()
        {
            return Err(FlushError::ShutDown);
        }
        match answer.recv_timeout(timeout.saturating_add(ANSWER_SLACK)) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(FlushError::Timeout {
                pending: self.shared.counters.snapshot().scores.pending,
                timeout,
            }),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(FlushError::ShutDown),
        }
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        self.shared.closed.store(true, Ordering::Release);
        let result = match self.request_blocking(timeout, |timeout, reply| Control::Shutdown {
            timeout,
            reply,
        }) {
            // The worker is gone: this is a repeated call; give the first call's outcome.
            Err(FlushError::ShutDown) => self.final_result(),
            other => other,
        };
        self.join_worker();
        result
    }

    fn final_result(&self) -> Result<(), FlushError> {
        self.shared.final_result.get().cloned().unwrap_or(Ok(()))
    }

    /// Joins the worker thread once it has signalled its exit; never waits unboundedly.
    fn join_worker(&self) {
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
            self.exited.recv_timeout(ANSWER_SLACK)
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

impl Drop for Inner {
    fn drop(&mut self) {
        let timeout = self.shared.config.shutdown_timeout;
        let _ = self.shutdown(timeout);
    }
}
