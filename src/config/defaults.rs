//! The defaults, the queue-full policy and the API key's wrapper: the values the builder
//! starts from and the settings carry.

use std::fmt;
use std::time::Duration;

/// Default base URL of the hosted PandaProbe API.
pub const DEFAULT_ENDPOINT: &str = "https://api.pandaprobe.com";
/// Default number of waiting records that wakes the worker at once.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Default longest time a record waits in the queue before the worker looks at it.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default capacity of the record queue.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 10_000;
/// Default byte budget: the most memory the records the SDK holds may take, all together
/// (queued, in the worker, waiting for a retry or for their trace, scored through open traces).
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 128 * 1024 * 1024;
/// Default size limit of one record (a score, a span, a trace's own fields), as the Langfuse
/// SDK's: over it, the largest fields are replaced by a marker until it fits.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;
/// Default bound on requests in flight at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;
/// Default timeout of one HTTP request, from sending to the end of the answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout for opening a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of retries after the first attempt of one record.
pub const DEFAULT_MAX_RETRIES: u32 = 8;
/// Default wait before the first retry (doubling, with jitter).
pub const DEFAULT_RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Default cap on one wait between retries.
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Default longest time one record is retried for, from its first failure.
pub const DEFAULT_RETRY_MAX_ELAPSED: Duration = Duration::from_secs(300);
/// Default cap on a server's `Retry-After`, and on a rate-limit pause.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Default time that dropping the last client handle spends delivering what is queued.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What `score()` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueFullPolicy {
    /// Drop the new record at once, count it as `dropped.queue_full` and return
    /// [`ScoreError::QueueFull`](crate::ScoreError::QueueFull). The default: the caller never
    /// waits.
    #[default]
    DropNew,
    /// Wait up to this long for room, then drop as above. Never on the worker's own thread
    /// (a drop hook that scores runs there): waiting there would wait for the worker itself,
    /// so such a call drops at once.
    Block(Duration),
}

/// The API key: kept out of every `Debug` and `Display` output.
#[derive(Clone)]
pub(crate) struct ApiKey(pub(crate) String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}
