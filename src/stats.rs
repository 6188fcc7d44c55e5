//! The one place that counts outcomes. Every record the client accepts ends in exactly one of
//! `sent` or a `dropped` reason; `pending` is derived, so `accepted == sent + dropped + pending`
//! holds in every snapshot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// The two kinds of record, counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Score,
    Trace,
}

/// Why a record was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    QueueFull,
    Rejected,
    RetriesExhausted,
    Shutdown,
}

impl DropReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue full",
            DropReason::Rejected => "rejected by the server",
            DropReason::RetriesExhausted => "retries exhausted",
            DropReason::Shutdown => "shutdown",
        }
    }
}

#[derive(Default)]
struct KindCounters {
    // Written by every producer thread: kept on its own cache line.
    accepted: CachePadded<AtomicU64>,
    sent: AtomicU64,
    retried: AtomicU64,
    ambiguous: AtomicU64,
    queue_full: AtomicU64,
    rejected: AtomicU64,
    retries_exhausted: AtomicU64,
    shutdown: AtomicU64,
}

/// Live counters shared by the client handles and the worker.
#[derive(Default)]
pub(crate) struct Counters {
    scores: KindCounters,
    traces: KindCounters,
    requests: AtomicU64,
    spans_dropped: AtomicU64,
    /// Set when the worker has stopped: whatever is still pending can no longer be delivered.
    worker_stopped: AtomicBool,
}

impl Counters {
    fn kind(&self, kind: Kind) -> &KindCounters {
        match kind {
            Kind::Score => &self.scores,
            Kind::Trace => &self.traces,
        }
    }

    /// Counts `n` accepted records; returns how many had been accepted before.
    pub(crate) fn accepted(&self, kind: Kind, n: u64) -> u64 {
        self.kind(kind).accepted.fetch_add(n, Ordering::Release)
    }

    pub(crate) fn sent(&self, kind: Kind) {
        self.kind(kind).sent.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn retried(&self, kind: Kind, ambiguous: bool) {
        let k = self.kind(kind);
        k.retried.fetch_add(1, Ordering::Relaxed);
        if ambiguous {
            k.ambiguous.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn spans_dropped(&self, n: u64) {
        self.spans_dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, kind: Kind, reason: DropReason, n: u64) {
        let k = self.kind(kind);
        let counter = match reason {
            DropReason::QueueFull => &k.queue_full,
            DropReason::Rejected => &k.rejected,
            DropReason::RetriesExhausted => &k.retries_exhausted,
            DropReason::Shutdown => &k.shutdown,
        };
        counter.fetch_add(n, Ordering::Release);
    }

    pub(crate) fn queue_full_total(&self) -> u64 {
        self.scores.queue_full.load(Ordering::Relaxed)
            + self.traces.queue_full.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_worker_stopped(&self) {
        self.worker_stopped.store(true, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let stopped = self.worker_stopped.load(Ordering::Acquire);
        Stats {
            scores: snapshot_kind(&self.scores, stopped),
            traces: snapshot_kind(&self.traces, stopped),
            requests: self.requests.load(Ordering::Relaxed),
            spans_dropped: self.spans_dropped.load(Ordering::Relaxed),
        }
    }
}

fn snapshot_kind(k: &KindCounters, worker_stopped: bool) -> RecordStats {
    // Outcomes first, `accepted` last: every outcome is counted after its acceptance, so the
    // difference can never go negative and `pending` needs no counter of its own.
    let sent = k.sent.load(Ordering::Acquire);
    let mut dropped = Dropped {
        queue_full: k.queue_full.load(Ordering::Acquire),
        rejected: k.rejected.load(Ordering::Acquire),
        retries_exhausted: k.retries_exhausted.load(Ordering::Acquire),
        shutdown: k.shutdown.load(Ordering::Acquire),
    };
    let retried = k.retried.load(Ordering::Relaxed);
    let ambiguous = k.ambiguous.load(Ordering::Relaxed);
    let accepted = k.accepted.load(Ordering::Acquire);
    let mut pending = accepted.saturating_sub(sent + dropped.total());
    if worker_stopped {
        // A record that raced past the closed check after the worker's last look is lost with
        // the worker: it is counted here rather than shown as pending forever.
        dropped.shutdown += pending;
        pending = 0;
    }
    RecordStats {
        accepted,
        sent,
        retried,
        ambiguous,
        pending,
        dropped,
    }
}

/// A snapshot of a client's counters, from [`Client::stats`](crate::Client::stats).
///
/// Scores and traces are counted apart. For each, at every snapshot,
/// `accepted == sent + dropped.total() + pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Scores.
    pub scores: RecordStats,
    /// Traces (each with its spans).
    pub traces: RecordStats,
    /// HTTP requests sent, first attempts and retries, scores and traces.
    pub requests: u64,
    /// Spans left out of traces that had more than the server's 500 (see
    /// [`Trace`](crate::Trace)).
    pub spans_dropped: u64,
}

/// Counts for one kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RecordStats {
    /// Records that passed validation, including those then dropped because the queue was full.
    pub accepted: u64,
    /// Records the server stored (answered 2xx).
    pub sent: u64,
    /// Retry attempts made (a record retried three times counts three).
    pub retried: u64,
    /// Retries after an attempt whose outcome was unknown (a timeout or a broken connection
    /// after the request was sent): each may have stored the record twice, since the server has
    /// no idempotency for scores.
    pub ambiguous: u64,
    /// Records accepted that have not reached an outcome yet.
    pub pending: u64,
    /// Records dropped, by reason.
    pub dropped: Dropped,
}

/// One line for logs and reports: `accepted 200, sent 198, pending 0, retried 5 (1 ambiguous),
/// dropped 2 (queue full 0, rejected 2, retries exhausted 0, shutdown 0)`.
impl std::fmt::Display for RecordStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accepted {}, sent {}, pending {}, retried {} ({} ambiguous), dropped {} \
             (queue full {}, rejected {}, retries exhausted {}, shutdown {})",
            self.accepted,
            self.sent,
            self.pending,
            self.retried,
            self.ambiguous,
            self.dropped.total(),
            self.dropped.queue_full,
            self.dropped.rejected,
            self.dropped.retries_exhausted,
            self.dropped.shutdown,
        )
    }
}

impl RecordStats {
    /// `accepted == sent + dropped + pending`: true for every snapshot; for tests and asserts.
    pub fn is_balanced(&self) -> bool {
        self.accepted == self.sent + self.dropped.total() + self.pending
    }
}

/// Records dropped, by reason. Each drop is also logged (rate-limited) under target
/// `pandaprobe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Dropped {
    /// The queue was full when `score()` was called.
    pub queue_full: u64,
    /// The server refused the record with a status that retrying cannot fix (401, 403, 422, …).
    pub rejected: u64,
    /// Every allowed retry failed, or the retry time ran out.
    pub retries_exhausted: u64,
    /// Still undelivered when shutdown's timeout ran out, or handed in after shutdown.
    pub shutdown: u64,
}

impl Dropped {
    /// All drops together.
    pub fn total(&self) -> u64 {
        self.queue_full + self.rejected + self.retries_exhausted + self.shutdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_is_derived_and_folded_into_shutdown_when_the_worker_stops() {
        let c = Counters::default();
        c.accepted(Kind::Score, 5);
        c.sent(Kind::Score);
        c.dropped(Kind::Score, DropReason::Rejected, 1);
        let s = c.snapshot();
        assert_eq!(s.scores.pending, 3);
        assert!(s.scores.is_balanced());
        c.mark_worker_stopped();
        let s = c.snapshot();
        assert_eq!(s.scores.pending, 0);
        assert_eq!(s.scores.dropped.shutdown, 3);
        assert!(s.scores.is_balanced());
        assert_eq!(s.traces, RecordStats::default());
    }
}
