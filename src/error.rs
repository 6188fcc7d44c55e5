//! Errors, split by phase: building a client, scoring, flushing or shutting down.

use std::fmt;
use std::time::Duration;

/// A setting given to [`ClientBuilder`](crate::ClientBuilder) or read from the environment that
/// cannot be used. Every variant names the setting; none of them ever contains the API key.
///
/// ```
/// use pandaprobe::{ClientBuilder, ConfigError};
///
/// let err = ClientBuilder::from_vars([("PANDAPROBE_BATCH_SIZE", "ten")]).build().unwrap_err();
/// assert!(matches!(err, ConfigError::Invalid { setting: "PANDAPROBE_BATCH_SIZE", .. }));
/// let err = ClientBuilder::new().project_name("p").build().unwrap_err();
/// assert_eq!(err.to_string(), "api_key is required when the client is enabled (set it on the builder or in PANDAPROBE_API_KEY)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is absent (the API key or the project name of an enabled client).
    #[error(
        "{setting} is required when the client is enabled (set it on the builder or in {env})"
    )]
    Missing {
        /// The builder setting, e.g. `api_key`.
        setting: &'static str,
        /// The environment variable that can carry it.
        env: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The builder setting or environment variable.
        setting: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// The worker thread, its runtime or its HTTP client could not be started; `source` is
    /// the underlying error.
    #[error("could not start the pandaprobe worker: {source}")]
    Worker {
        /// What the operating system, tokio or the HTTP stack said.
        #[source]
        source: StartError,
    },
}

/// The error under [`ConfigError::Worker`]: kept whole (its own `source()` chain included), and
/// shared, so that the error stays `Clone` and comparable (by its text).
#[derive(Debug, Clone)]
pub struct StartError(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl StartError {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> StartError {
        StartError(std::sync::Arc::new(error))
    }

    pub(crate) fn stopped() -> StartError {
        StartError::new(std::io::Error::other(
            "the worker thread stopped before it was ready",
        ))
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for StartError {
    fn eq(&self, other: &StartError) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for StartError {}

/// Why [`Client::score`](crate::Client::score) refused a score. A refused score is not queued
/// and not counted as accepted, except for [`ScoreError::QueueFull`],
/// [`ScoreError::QueueBytesFull`], [`ScoreError::ShutDown`], [`ScoreError::Forked`] and
/// [`ScoreError::WorkerDied`]: the score was valid, and it is counted as dropped.
///
/// ```
/// use pandaprobe::{Client, Score, ScoreError};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder().enabled(false).build()?;
/// let trace_id = pandaprobe::Uuid::new_v4();
/// // A disabled client checks nothing; `Score::to_body` applies the same rules.
/// let err = Score::new(trace_id, "accuracy", "1.5").to_body().unwrap_err();
/// assert_eq!(err, ScoreError::InvalidNumeric("1.5".into()));
/// match client.score(Score::numeric(trace_id, "accuracy", 0.8)) {
///     Ok(()) => {}
///     Err(ScoreError::QueueFull) => { /* counted as dropped; maybe raise max_queue_size */ }
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// The trace id is not a UUID.
    #[error("trace id {0:?} is not a UUID (expected e.g. 29c160fc-44bc-41ad-8bec-fa678ddb1f9a)")]
    InvalidTraceId(String),
    /// The score name is longer than the server stores.
    #[error("score name is {0} characters long; the server stores at most 255")]
    NameTooLong(usize),
    /// The value is longer than the server stores.
    #[error("score value is {0} characters long; the server stores at most 255")]
    ValueTooLong(usize),
    /// A NUMERIC value that is not a number in `[0, 1]` as the server reads it (Python's
    /// `float()`: surrounding whitespace, `_` between digits and digits of any script are fine).
    #[error("NUMERIC score value {0:?} must be a number between 0 and 1")]
    InvalidNumeric(String),
    /// A BOOLEAN value other than `true` or `false` (any case).
    #[error("BOOLEAN score value {0:?} must be true or false")]
    InvalidBoolean(String),
    /// Metadata that is not a JSON object (the server rejects arrays, scalars and null).
    #[error("score metadata must be a JSON object, got {0}")]
    MetadataNotObject(&'static str),
    /// A NUL character, which the server's database cannot store (it answers 500).
    #[error("score {0} contains a NUL character, which the server cannot store")]
    NulCharacter(&'static str),
    /// The queue is full; the score was dropped and counted (see [`Stats`](crate::Stats)).
    #[error(
        "the pandaprobe queue is full; the score was dropped (raise max_queue_size, \
         or use QueueFullPolicy::Block to wait for room)"
    )]
    QueueFull,
    /// The byte budget ([`ClientBuilder::max_queue_bytes`](crate::ClientBuilder::max_queue_bytes))
    /// has no room for this record: the server is slow or away and the SDK already holds as
    /// much as it may. The record was dropped and counted.
    #[error(
        "the pandaprobe byte budget is full ({record_bytes} bytes do not fit in max_queue_bytes \
         {max_queue_bytes}); the record was dropped"
    )]
    QueueBytesFull {
        /// What the record costs in memory.
        record_bytes: usize,
        /// The budget.
        max_queue_bytes: usize,
    },
    /// The client was shut down; the score was dropped and counted.
    #[error("the pandaprobe client is shut down; the score was dropped")]
    ShutDown,
    /// The process was forked after this client was made: its worker thread lives in the
    /// parent only. Make a new client in the child. The record was dropped and counted.
    #[error(
        "this pandaprobe client was made before fork(); its worker runs in the parent, so the \
         child must make a client of its own; the record was dropped"
    )]
    Forked,
    /// The client's worker thread died of a panic; nothing more can be delivered, and the score
    /// was dropped and counted.
    #[error("the pandaprobe worker has died; the score was dropped (see the ERROR log)")]
    WorkerDied,
}

impl ScoreError {
    /// The score was valid, and it was dropped (counted in [`Stats`](crate::Stats) and handed
    /// to the drop hook): the queue or the byte budget was full, or the client cannot deliver
    /// any more (shut down, forked, its worker died). Retrying the same call may succeed later.
    ///
    /// ```
    /// use pandaprobe::{Score, ScoreError, Uuid};
    ///
    /// let err = Score::new(Uuid::nil(), "accuracy", "1.5").to_body().unwrap_err();
    /// assert!(err.is_invalid() && !err.is_dropped());
    /// assert!(ScoreError::QueueFull.is_dropped());
    /// ```
    pub fn is_dropped(&self) -> bool {
        matches!(
            self,
            ScoreError::QueueFull
                | ScoreError::QueueBytesFull { .. }
                | ScoreError::ShutDown
                | ScoreError::Forked
                | ScoreError::WorkerDied
        )
    }

    /// The score itself breaks one of the server's rules: fix the call; nothing was counted.
    pub fn is_invalid(&self) -> bool {
        !self.is_dropped()
    }
}

/// Where the records the worker held were when a flush or shutdown ran out of time, so that a
/// timeout says why: the server has not stored their trace yet, its rate limit holds them, a
/// retry waits for its backoff, the request is under way, or they are still queued. It counts
/// everything the worker held, not only the records of the call that timed out.
///
/// `Display`: `3 waiting for their trace to be stored, 200 for a rate-limit window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Waiting {
    /// Scores (and spans past a trace's first 500) held until the server says their trace is
    /// stored, or until a trace still open in this process ends.
    pub for_trace: u64,
    /// Records ready to go on a path whose rate-limit window is closed.
    pub for_rate_limit: u64,
    /// Records waiting for their retry's backoff.
    pub for_retry: u64,
    /// Requests sent and not answered yet (a server that hangs shows here).
    pub in_flight: u64,
    /// Records queued or ready to go, not yet sent.
    pub queued: u64,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.for_trace, "waiting for their trace to be stored"),
            (self.for_rate_limit, "for a rate-limit window"),
            (self.for_retry, "for a retry"),
            (self.in_flight, "in flight"),
            (self.queued, "queued"),
        ];
        let mut first = true;
        for (n, what) in parts.into_iter().filter(|(n, _)| *n > 0) {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{n} {what}")?;
            first = false;
        }
        if first {
            f.write_str("the worker did not answer in time")?;
        }
        Ok(())
    }
}

/// Why [`Client::flush`](crate::Client::flush) or [`Client::shutdown`](crate::Client::shutdown)
/// did not see every record it waited for delivered.
///
/// ```
/// use std::time::Duration;
/// use pandaprobe::{Client, FlushError};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder().enabled(false).build()?;
/// match client.flush(Duration::from_secs(5)) {
///     Ok(()) => {} // everything scored before the call is delivered
///     Err(FlushError::Timeout { pending, .. }) => eprintln!("{pending} still on their way"),
///     Err(FlushError::Dropped { dropped, reason }) => eprintln!("{dropped} lost, e.g. {reason}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The timeout passed while records were still waiting for their outcome. For a flush they
    /// stay queued and keep being delivered; for a shutdown they were dropped and counted.
    #[error("{pending} record(s) still pending after {timeout:?}: {waiting}")]
    Timeout {
        /// Records that had not reached an outcome.
        pending: u64,
        /// The timeout that passed.
        timeout: Duration,
        /// Why: where everything the worker held was when the time ran out.
        waiting: Waiting,
    },
    /// Every record the call waited for reached its outcome, but some were dropped (rejected,
    /// retries exhausted, quota, …): the drop hook, the log and [`Stats`](crate::Stats) say
    /// which and why.
    #[error("{dropped} record(s) were dropped ({reason}, among others if more than one); see the pandaprobe log")]
    Dropped {
        /// Records the call waited for that were dropped.
        dropped: u64,
        /// Why the first of them was dropped.
        reason: crate::DropReason,
    },
    /// The client was shut down before this call; nothing more can be delivered.
    #[error("the pandaprobe client is shut down")]
    ShutDown,
    /// The process was forked after this client was made: its worker lives in the parent.
    #[error("this pandaprobe client was made before fork(); its worker runs in the parent")]
    Forked,
    /// The worker thread died of a panic; what it held was dropped and counted as
    /// `worker_failed`.
    #[error(
        "the pandaprobe worker has died; undelivered records were dropped (see the ERROR log)"
    )]
    WorkerDied,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_worker_that_cannot_start_keeps_the_cause() {
        let cause = std::io::Error::other("no threads left");
        let err = ConfigError::Worker {
            source: StartError::new(cause),
        };
        assert_eq!(
            err.to_string(),
            "could not start the pandaprobe worker: no threads left"
        );
        let source = err.source().expect("a source");
        assert_eq!(source.to_string(), "no threads left");
        assert_eq!(err.clone(), err, "still Clone and Eq");
    }
}
