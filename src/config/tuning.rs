//! The builder's setters for how records travel: batching, the queue's bounds, concurrency,
//! timeouts, retries and rate limits.

use std::time::Duration;

use super::builder::ClientBuilder;
use super::defaults::*;
use super::settings::RateLimit;

impl ClientBuilder {
    /// How many waiting records wake the worker before its interval is up. Default
    /// [`DEFAULT_BATCH_SIZE`]. The server has no batch endpoint: a batch is sent as concurrent
    /// single-record requests, at most [`max_in_flight`](Self::max_in_flight) at once.
    pub fn batch_size(self, size: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_BATCH_SIZE");
        b.batch_size = size;
        b
    }

    /// The longest a record waits before the worker sends it. Default
    /// [`DEFAULT_FLUSH_INTERVAL`]. An idle client wakes once per interval.
    pub fn flush_interval(self, interval: Duration) -> Self {
        let mut b = self.overridden("PANDAPROBE_FLUSH_INTERVAL");
        b.flush_interval = interval;
        b
    }

    /// Capacity of the record queue, in records. Default [`DEFAULT_MAX_QUEUE_SIZE`]. Its slots
    /// are reserved up front (about 120 bytes each); what the records hold is bounded by
    /// [`max_queue_bytes`](Self::max_queue_bytes). Beyond the queue, the worker holds at most
    /// `max(1024, 4 × max_in_flight, 2 × batch_size)` records being sent or waiting for a
    /// retry (never more than `max(max_queue_size, 2 × max_in_flight)`), plus at most
    /// `max_queue_size` scores waiting for their trace to be stored.
    pub fn max_queue_size(self, size: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_QUEUE_SIZE");
        b.max_queue_size = size;
        b
    }

    /// The byte budget: the most memory all the records the SDK holds for delivery may take
    /// together (queued, in the worker's hands, waiting for a retry or for their trace, and
    /// scores made through a trace still open). Default [`DEFAULT_MAX_QUEUE_BYTES`] (128 MiB).
    ///
    /// Each record is charged what it costs in memory (an estimate of its heap: text, JSON
    /// values and their nodes, at least its JSON length, plus 512 bytes of bookkeeping) when
    /// it is handed in, and given back when it reaches its outcome. A record that does not
    /// fit is refused at the call: [`ScoreError::QueueBytesFull`](crate::ScoreError::QueueBytesFull),
    /// counted as [`DropReason::QueueBytesFull`](crate::DropReason::QueueBytesFull).
    pub fn max_queue_bytes(self, bytes: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_QUEUE_BYTES");
        b.max_queue_bytes = bytes;
        b
    }

    /// The size limit of one record: a score, one span, or a trace's own fields. Default
    /// [`DEFAULT_MAX_RECORD_BYTES`] (1,000,000 bytes, as the Langfuse SDK's event limit).
    ///
    /// A record over it is not refused: its largest big field (a score's `reason` or
    /// `metadata`; a span's or trace's `input`, `output` or `metadata`) is replaced by a marker
    /// string, `"[cut by pandaprobe: output was 3145760 bytes; max_record_bytes is 1000000]"`
    /// (`metadata` becomes `{"pandaprobe_cut": "…"}`, since it must stay an object), then the
    /// next largest, until it fits. Each cut is counted in [`Stats::fields_cut`](crate::Stats)
    /// and logged at debug level. A huge tool output costs a marker, not the whole trace.
    pub fn max_record_bytes(self, bytes: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_RECORD_BYTES");
        b.max_record_bytes = bytes;
        b
    }

    /// Bound on concurrent requests. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub fn max_in_flight(self, n: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_IN_FLIGHT");
        b.max_in_flight = n;
        b
    }

    /// Timeout of one request, sending to the end of the answer. Default
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn request_timeout(self, timeout: Duration) -> Self {
        let mut b = self.overridden("PANDAPROBE_REQUEST_TIMEOUT");
        b.request_timeout = timeout;
        b
    }

    /// Timeout for opening a connection. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        let mut b = self.overridden("PANDAPROBE_CONNECT_TIMEOUT");
        b.connect_timeout = timeout;
        b
    }

    /// Retries after a record's first attempt; `0` disables retrying. Rate-limit answers do
    /// not count. Default [`DEFAULT_MAX_RETRIES`].
    pub fn max_retries(self, retries: u32) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_RETRIES");
        b.max_retries = retries;
        b
    }

    /// The first wait between retries and the cap on one wait; waits double with ±50% jitter.
    /// Defaults [`DEFAULT_RETRY_INITIAL_BACKOFF`] and [`DEFAULT_RETRY_MAX_BACKOFF`].
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial_backoff = initial;
        self.retry_max_backoff = max;
        self
    }

    /// The longest one record is retried for, counted from its first failure. Default
    /// [`DEFAULT_RETRY_MAX_ELAPSED`].
    pub fn retry_max_elapsed(mut self, max: Duration) -> Self {
        self.retry_max_elapsed = max;
        self
    }

    /// Cap on a server's `Retry-After` and on any rate-limit pause. Default
    /// [`DEFAULT_MAX_RETRY_AFTER`] (the server's windows last a minute).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// What dropping the last client handle spends on delivering what is queued. Default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        let mut b = self.overridden("PANDAPROBE_SHUTDOWN_TIMEOUT");
        b.shutdown_timeout = timeout;
        b
    }

    /// What `score()` does when the queue is full. Default [`QueueFullPolicy::DropNew`].
    pub fn queue_full(mut self, policy: QueueFullPolicy) -> Self {
        self.queue_full = policy;
        self
    }

    /// Your plan's limit on score requests: at most `limit` per fixed `window` (the hosted
    /// service: 200 a minute). With it, this client never sends into a full window and never
    /// gets a 429 for scores (unless other clients share the key). Default none: the client
    /// learns the limit from the server's first 429, which names it. A `limit` of 0 is taken
    /// as 1.
    pub fn scores_rate_limit(mut self, limit: u32, window: Duration) -> Self {
        self.scores_rate_limit = Some(RateLimit::new(limit, window));
        self
    }

    /// Your plan's limit on trace requests (the hosted service: 100 a minute); see
    /// [`scores_rate_limit`](Self::scores_rate_limit).
    pub fn traces_rate_limit(mut self, limit: u32, window: Duration) -> Self {
        self.traces_rate_limit = Some(RateLimit::new(limit, window));
        self
    }
}
