//! What the drop hook sees: one [`DropEvent`] for every record that was queued and then lost.

use std::fmt;

use uuid::Uuid;

/// The two kinds of record the client delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// A score (`POST /evaluations/trace-scores`).
    Score,
    /// A trace with its spans (`POST /traces`).
    Trace,
}

impl RecordKind {
    /// `"score"` or `"trace"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Score => "score",
            RecordKind::Trace => "trace",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record was dropped. Each reason has its own counter in
/// [`Dropped`](crate::Dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The queue was full when the record was handed in. `score()` returns
    /// [`ScoreError::QueueFull`](crate::ScoreError::QueueFull) for it.
    QueueFull,
    /// The byte budget had no room for it when it was handed in. The call returned
    /// [`ScoreError::QueueBytesFull`](crate::ScoreError::QueueBytesFull) (or, for a trace,
    /// the hook says so).
    QueueBytesFull,
    /// Handed in, in a forked child, to a client made before the fork.
    Forked,
    /// The server refused it with a status retrying cannot fix (401, 403, 404, 422, …).
    Rejected,
    /// Every allowed retry failed, or the retry time ran out.
    RetriesExhausted,
    /// The account's trace quota is used up (a 429 whose body names the limit): no retry can
    /// succeed before the quota resets. Scores waiting for a trace dropped this way go with it.
    QuotaExceeded,
    /// Never sent, or waiting for a retry or for its trace, when shutdown's deadline passed;
    /// or handed in after shutdown.
    Shutdown,
    /// In flight when shutdown's deadline passed: abandoned without an answer, so the server
    /// **may have stored it**.
    ShutdownInFlight,
    /// The worker thread panicked while it held the record.
    WorkerFailed,
}

impl DropReason {
    /// A short name for logs: `"queue_full"`, `"rejected"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::QueueBytesFull => "queue_bytes_full",
            DropReason::Forked => "forked",
            DropReason::Rejected => "rejected",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::QuotaExceeded => "quota_exceeded",
            DropReason::Shutdown => "shutdown",
            DropReason::ShutdownInFlight => "shutdown_in_flight",
            DropReason::WorkerFailed => "worker_failed",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that was queued and then dropped, as the hook set with
/// [`ClientBuilder::on_drop`](crate::ClientBuilder::on_drop) sees it.
///
/// ```
/// use pandaprobe::{Client, DropEvent};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder()
///     .api_key("sk_pp_...")
///     .project_name("my-project")
///     .on_drop(|event: &DropEvent| {
///         eprintln!(
///             "lost {} {:?} of trace {} ({}): {:?} {:?}",
///             event.kind(), event.name(), event.trace_id(), event.reason(),
///             event.status(), event.message(),
///         );
///     })
///     .build()?;
/// # drop(client);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropEvent {
    kind: RecordKind,
    reason: DropReason,
    trace_id: Uuid,
    name: String,
    status: Option<u16>,
    message: Option<String>,
}

impl DropEvent {
    pub(crate) fn new(
        kind: RecordKind,
        reason: DropReason,
        trace_id: Uuid,
        name: impl Into<String>,
    ) -> DropEvent {
        DropEvent {
            kind,
            reason,
            trace_id,
            name: name.into(),
            status: None,
            message: None,
        }
    }

    pub(crate) fn with_answer(mut self, status: Option<u16>, message: Option<String>) -> Self {
        self.status = status;
        self.message = message.filter(|m| !m.is_empty());
        self
    }

    /// A score or a trace.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// Why it was dropped.
    pub fn reason(&self) -> DropReason {
        self.reason
    }

    /// The trace the record belongs to (for a trace, its own id).
    pub fn trace_id(&self) -> Uuid {
        self.trace_id
    }

    /// The score's name, or the trace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last HTTP status the server answered for this record, if it answered at all.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The server's message for the last answer, or the transport error, if any.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for DropEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} of trace {} dropped ({})",
            self.kind, self.name, self.trace_id, self.reason
        )?;
        match (self.status, &self.message) {
            (Some(status), Some(message)) => write!(f, ": HTTP {status}: {message}"),
            (Some(status), None) => write!(f, ": HTTP {status}"),
            (None, Some(message)) => write!(f, ": {message}"),
            (None, None) => Ok(()),
        }
    }
}

/// The hook's type, shared by the client handles and the worker.
pub(crate) type DropHook = dyn Fn(&DropEvent) + Send + Sync + 'static;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_everything_a_user_needs() {
        let event = DropEvent::new(RecordKind::Score, DropReason::Rejected, Uuid::nil(), "acc")
            .with_answer(Some(401), Some("Invalid API key".into()));
        assert_eq!(
            event.to_string(),
            "score \"acc\" of trace 00000000-0000-0000-0000-000000000000 dropped (rejected): \
             HTTP 401: Invalid API key"
        );
        let quiet = DropEvent::new(RecordKind::Trace, DropReason::Shutdown, Uuid::nil(), "t")
            .with_answer(None, Some(String::new()));
        assert_eq!(quiet.message(), None);
    }
}
