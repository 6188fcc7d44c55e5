//! The client handle.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{ClientBuilder, Config};
use crate::error::{ConfigError, FlushError, ScoreError};
use crate::producer::Producer;
use crate::protocol::Shared;
use crate::score::Score;
use crate::stats::Stats;
use crate::trace::{Trace, TraceBuilder};
use crate::worker::thread::{self as worker, WorkerHandle};

/// A handle to a PandaProbe client: cheap to clone, `Send + Sync`; all clones share one queue
/// and one worker thread. Dropping the last handle shuts the worker down, delivering what is
/// queued within [`ClientBuilder::shutdown_timeout`].
///
/// ```
/// use std::time::Duration;
/// use pandaprobe::{Client, Score, Uuid};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder().enabled(false).build()?; // a real one needs a key and project
/// client.score(Score::numeric(Uuid::new_v4(), "relevance", 0.9))?;
/// client.flush(Duration::from_secs(10))?;
/// println!("{client:?}"); // Client { enabled: false }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Option<Arc<Inner>>,
}

/// A handle that does not keep the client alive: what a drop hook, or anything else the
/// client itself keeps, holds when it needs the client. A hook that captured a [`Client`]
/// would own the client that owns the hook: the last user handle would never shut it down.
/// From [`Client::downgrade`].
///
/// ```
/// use std::sync::{Arc, OnceLock};
/// use pandaprobe::{Client, Score, WeakClient};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let slot: Arc<OnceLock<WeakClient>> = Arc::default();
/// let in_hook = Arc::clone(&slot);
/// let client = Client::builder()
///     .enabled(false)
///     .on_drop(move |event| {
///         // Score the loss against its trace, if the client still runs.
///         if let Some(client) = in_hook.get().and_then(WeakClient::upgrade) {
///             let _ = client.score(Score::boolean(event.trace_id(), "record_lost", true));
///         }
///     })
///     .build()?;
/// let _ = slot.set(client.downgrade());
/// drop(client); // shuts down: the hook holds no strong handle
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct WeakClient {
    inner: Weak<Inner>,
}

impl WeakClient {
    /// The client, while some [`Client`] handle still holds it; `None` once the last one
    /// went, including during the shutdown that follows (a hook called for a record dropped
    /// by that shutdown cannot score through it), and for a disabled client.
    ///
    /// The upgraded handle is an owner like any other: drop it when done (if it is the last
    /// one, dropping it shuts the client down; on the worker's thread, in a hook, without
    /// waiting).
    pub fn upgrade(&self) -> Option<Client> {
        self.inner
            .upgrade()
            .map(|inner| Client { inner: Some(inner) })
    }
}

impl fmt::Debug for WeakClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakClient")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}

struct Inner {
    producer: Producer,
    worker: WorkerHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // In a forked child the worker is the parent's: there is nothing to shut down or join.
        if self.producer.forked() {
            self.worker.forget_in_child();
            return;
        }
        let timeout = self.producer.config().shutdown_timeout;
        // A hook's upgraded `WeakClient` can be the last handle: on the worker's own thread
        // the shutdown is asked for and the worker left to finish it (it cannot join itself).
        if crate::producer::on_worker_thread() {
            self.producer.shutdown_in_background(timeout);
            return;
        }
        let _ = self.producer.shutdown(timeout);
        self.worker.join();
    }
}

impl ClientBuilder {
    /// Checks the settings and starts the client's worker thread (unless disabled).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting (or environment variable) that cannot be used:
    /// a missing API key or project name, a malformed endpoint or project name, a zero size or
    /// duration, a value in the environment that does not parse; or the worker thread could not
    /// be started.
    pub fn build(self) -> Result<Client, ConfigError> {
        if !self.enabled {
            return Ok(Client::disabled());
        }
        Client::start(self.into_config()?)
    }
}

impl Client {
    /// A builder with the defaults only (see [`ClientBuilder`]).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client configured from the `PANDAPROBE_*` environment variables alone.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`]: a missing or unusable setting, named.
    pub fn from_env() -> Result<Client, ConfigError> {
        ClientBuilder::from_env().build()
    }

    /// A client that accepts and discards everything, at no cost and with no thread.
    pub fn disabled() -> Client {
        Client { inner: None }
    }

    pub(crate) fn start(config: Config) -> Result<Client, ConfigError> {
        let (records, queue) = crossbeam_channel::bounded(config.max_queue_size);
        let (notices, notices_rx) = crossbeam_channel::bounded(config.max_queue_size);
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(config));
        let worker = worker::spawn(Arc::clone(&shared), queue, notices_rx, control_rx)?;
        Ok(Client {
            inner: Some(Arc::new(Inner {
                producer: Producer::new(shared, records, notices, control),
                worker,
            })),
        })
    }

    /// A handle that does not keep this client alive; see [`WeakClient`].
    pub fn downgrade(&self) -> WeakClient {
        WeakClient {
            inner: self.inner.as_ref().map_or_else(Weak::new, Arc::downgrade),
        }
    }

    /// The producer side, for traces; `None` for a disabled client.
    pub(crate) fn producer(&self) -> Option<&Producer> {
        self.inner.as_ref().map(|inner| &inner.producer)
    }

    pub(crate) fn same_as(&self, other: &Client) -> bool {
        match (&self.inner, &other.inner) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    pub(crate) fn shutdown_timeout(&self) -> Duration {
        self.producer()
            .map_or(Duration::ZERO, |p| p.config().shutdown_timeout)
    }

    /// `false` for a disabled client.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Validates a score and queues it for delivery; never blocks (unless
    /// [`QueueFullPolicy::Block`](crate::QueueFullPolicy::Block) is configured) and never
    /// touches the network.
    ///
    /// # Errors
    ///
    /// A score that breaks one of the server's rules is refused with the rule
    /// ([`ScoreError::InvalidNumeric`], …) and nothing is queued or counted.
    /// [`ScoreError::QueueFull`], [`ScoreError::ShutDown`] and [`ScoreError::WorkerDied`] mean
    /// the score was valid but dropped; it is counted in [`Stats`].
    #[inline]
    pub fn score(&self, score: Score) -> Result<(), ScoreError> {
        // Inlined down to this check, so a disabled client costs the caller next to nothing.
        match &self.inner {
            Some(inner) => inner.producer.score(score),
            None => Ok(()),
        }
    }

    /// A builder for a trace with options (session, user, tags, input, metadata).
    pub fn trace(&self, name: impl Into<String>) -> TraceBuilder {
        TraceBuilder::new(self.producer().cloned(), name.into())
    }

    /// Starts a trace named `name` with a fresh UUID; score it with its
    /// [`trace_id`](Trace::trace_id).
    pub fn start_trace(&self, name: impl Into<String>) -> Trace {
        self.trace(name).start()
    }

    /// Blocks until every record whose `score()` (or trace end) returned before this call has
    /// reached its outcome, or until `timeout`. Works from any thread, inside or outside
    /// a tokio runtime (inside one it blocks that thread: prefer
    /// [`flush_async`](Self::flush_async) there); the worker enforces the deadline.
    ///
    /// Scores held by a trace that has not ended yet are not waited for.
    ///
    /// # Errors
    ///
    /// - [`FlushError::Timeout`]: records were still pending when `timeout` passed; they stay
    ///   queued and keep being delivered.
    /// - [`FlushError::Dropped`]: everything reached its outcome, but some of the records this
    ///   call waited for were dropped (a bad API key, a quota, retries exhausted…).
    /// - [`FlushError::ShutDown`], [`FlushError::WorkerDied`]: nothing more can be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        match self.producer() {
            Some(producer) => producer.flush(timeout),
            None => Ok(()),
        }
    }

    /// [`flush`](Self::flush) for async callers: awaits without blocking a thread, on any
    /// executor.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    pub async fn flush_async(&self, timeout: Duration) -> Result<(), FlushError> {
        match self.producer() {
            Some(producer) => producer.flush_async(timeout).await,
            None => Ok(()),
        }
    }

    /// Stops accepting records, delivers what is queued within `timeout`, drops and counts the
    /// rest, and stops the worker thread. Idempotent: later calls return the first outcome.
    /// Affects every clone of this handle.
    ///
    /// # Errors
    ///
    /// - [`FlushError::Timeout`]: `pending` records were not delivered in time and were
    ///   dropped (counted as `shutdown`, or `shutdown_in_flight` for requests abandoned in
    ///   flight, which the server may have stored).
    /// - [`FlushError::Dropped`]: everything reached its outcome, some of it dropped.
    /// - [`FlushError::WorkerDied`]: the worker had died; what it held was counted as dropped.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        match &self.inner {
            Some(inner) => {
                let result = inner.producer.shutdown(timeout);
                inner.worker.join();
                result
            }
            None => Ok(()),
        }
    }

    /// [`shutdown`](Self::shutdown) for async callers. The worker thread finishes on its own
    /// right after answering; it is joined when the last handle is dropped.
    ///
    /// # Errors
    ///
    /// As [`shutdown`](Self::shutdown).
    pub async fn shutdown_async(&self, timeout: Duration) -> Result<(), FlushError> {
        match self.producer() {
            Some(producer) => producer.shutdown_async(timeout).await,
            None => Ok(()),
        }
    }

    /// A snapshot of the counters: accepted, sent, retried, pending and dropped by reason,
    /// for scores and traces apart. All zero for a disabled client.
    pub fn stats(&self) -> Stats {
        self.producer().map(Producer::stats).unwrap_or_default()
    }
}

/// `Client { enabled: true, endpoint: "https://api.pandaprobe.com", project_name: "…", stats: … }`;
/// the API key never shows.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.producer() {
            None => f.debug_struct("Client").field("enabled", &false).finish(),
            Some(producer) => {
                let config = producer.config();
                f.debug_struct("Client")
                    .field("enabled", &true)
                    .field("endpoint", &config.endpoint())
                    .field("project_name", &config.project_name)
                    .field("stats", &producer.stats())
                    .finish_non_exhaustive()
            }
        }
    }
}
