//! The one place that counts outcomes. Every record the client accepts ends in exactly one of
//! `sent` or a `dropped` reason; `pending` is derived, so `accepted == sent + dropped + pending`
//! holds in every snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crossbeam_utils::CachePadded;

use crate::drop_event::{DropReason, RecordKind};

#[derive(Default)]
struct KindCounters {
    // Written by every producer thread: kept on its own cache line.
    accepted: CachePadded<AtomicU64>,
    sent: AtomicU64,
    retried: AtomicU64,
    ambiguous: AtomicU64,
    queue_full: AtomicU64,
    queue_bytes_full: AtomicU64,
    forked: AtomicU64,
    rejected: AtomicU64,
    retries_exhausted: AtomicU64,
    quota_exceeded: AtomicU64,
    shutdown: AtomicU64,
    shutdown_in_flight: AtomicU64,
    worker_failed: AtomicU64,
}

impl KindCounters {
    fn dropped(&self, reason: DropReason) -> &AtomicU64 {
        match reason {
            DropReason::QueueFull => &self.queue_full,
            DropReason::QueueBytesFull => &self.queue_bytes_full,
            DropReason::Forked => &self.forked,
            DropReason::Rejected => &self.rejected,
            DropReason::RetriesExhausted => &self.retries_exhausted,
            DropReason::QuotaExceeded => &self.quota_exceeded,
            DropReason::Shutdown => &self.shutdown,
            DropReason::ShutdownInFlight => &self.shutdown_in_flight,
            DropReason::WorkerFailed => &self.worker_failed,
        }
    }
}

/// Whether the worker still runs; once it has stopped, nothing pending can be delivered.
const RUNNING: u8 = 0;
const STOPPED: u8 = 1;
const DIED: u8 = 2;

/// Live counters shared by the client handles and the worker.
#[derive(Default)]
pub(crate) struct Counters {
    scores: KindCounters,
    traces: KindCounters,
    requests: AtomicU64,
    probes: AtomicU64,
    spans_added: AtomicU64,
    spans_dropped: AtomicU64,
    nul_replaced: AtomicU64,
    fields_cut: AtomicU64,
    hook_panics: AtomicU64,
    worker: AtomicU8,
}

impl Counters {
    fn kind(&self, kind: RecordKind) -> &KindCounters {
        match kind {
            RecordKind::Score => &self.scores,
            RecordKind::Trace => &self.traces,
        }
    }

    /// Counts `n` accepted records; returns how many had been accepted before.
    pub(crate) fn accepted(&self, kind: RecordKind, n: u64) -> u64 {
        self.kind(kind).accepted.fetch_add(n, Ordering::Release)
    }

    pub(crate) fn sent(&self, kind: RecordKind) {
        self.kind(kind).sent.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn retried(&self, kind: RecordKind, ambiguous: bool) {
        let k = self.kind(kind);
        k.retried.fetch_add(1, Ordering::Relaxed);
        if ambiguous {
            k.ambiguous.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self, kind: RecordKind, reason: DropReason, n: u64) {
        self.kind(kind)
            .dropped(reason)
            .fetch_add(n, Ordering::Release);
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn probe(&self) {
        self.probes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn spans_added(&self, n: u64) {
        self.spans_added.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn spans_dropped(&self, n: u64) {
        self.spans_dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn nul_replaced(&self, n: u64) {
        self.nul_replaced.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn fields_cut(&self, n: u64) {
        self.fields_cut.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn hook_panicked(&self) {
        self.hook_panics.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn queue_full_total(&self) -> u64 {
        self.scores.queue_full.load(Ordering::Relaxed)
            + self.traces.queue_full.load(Ordering::Relaxed)
    }

    /// The worker has exited normally (after shutdown).
    pub(crate) fn mark_worker_stopped(&self) {
        let _ = self
            .worker
            .compare_exchange(RUNNING, STOPPED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The worker has died of a panic.
    pub(crate) fn mark_worker_died(&self) {
        self.worker.store(DIED, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let worker = self.worker.load(Ordering::Acquire);
        Stats {
            scores: snapshot_kind(&self.scores, worker),
            traces: snapshot_kind(&self.traces, worker),
            requests: self.requests.load(Ordering::Relaxed),
            probes: self.probes.load(Ordering::Relaxed),
            spans_added: self.spans_added.load(Ordering::Relaxed),
            spans_dropped: self.spans_dropped.load(Ordering::Relaxed),
            nul_replaced: self.nul_replaced.load(Ordering::Relaxed),
            fields_cut: self.fields_cut.load(Ordering::Relaxed),
            hook_panics: self.hook_panics.load(Ordering::Relaxed),
        }
    }
}

fn snapshot_kind(k: &KindCounters, worker: u8) -> RecordStats {
    // Outcomes first, `accepted` last: every outcome is counted after its acceptance, so the
    // difference can never go negative and `pending` needs no counter of its own.
    let sent = k.sent.load(Ordering::Acquire);
    let load = |reason| k.dropped(reason).load(Ordering::Acquire);
    let mut dropped = Dropped {
        queue_full: load(DropReason::QueueFull),
        queue_bytes_full: load(DropReason::QueueBytesFull),
        forked: load(DropReason::Forked),
        rejected: load(DropReason::Rejected),
        retries_exhausted: load(DropReason::RetriesExhausted),
        quota_exceeded: load(DropReason::QuotaExceeded),
        shutdown: load(DropReason::Shutdown),
        shutdown_in_flight: load(DropReason::ShutdownInFlight),
        worker_failed: load(DropReason::WorkerFailed),
    };
    let retried = k.retried.load(Ordering::Relaxed);
    let ambiguous = k.ambiguous.load(Ordering::Relaxed);
    let accepted = k.accepted.load(Ordering::Acquire);
    let mut pending = accepted.saturating_sub(sent + dropped.total());
    // A record that raced past the closed check after the worker's last look is lost with
    // the worker: it is counted here rather than shown as pending forever.
    match worker {
        STOPPED => dropped.shutdown += std::mem::take(&mut pending),
        DIED => dropped.worker_failed += std::mem::take(&mut pending),
        _ => {}
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
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = pandaprobe::Client::disabled();
/// let stats = client.stats();
/// assert!(stats.scores.is_balanced() && stats.traces.is_balanced());
/// println!("{stats}"); // scores: accepted 0, sent 0, …; traces: …; requests 0
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Scores.
    pub scores: RecordStats,
    /// Traces (each with its spans).
    pub traces: RecordStats,
    /// HTTP requests sent for records, first attempts and retries: scores, traces and the
    /// spans added to traces. Readiness probes are counted apart.
    pub requests: u64,
    /// Readiness probes sent: questions to the server whether a trace is stored yet, so that
    /// its scores (and spans past the first 500) wait for it without being refused.
    pub probes: u64,
    /// Spans delivered in requests of their own, after their trace's first 500.
    pub spans_added: u64,
    /// Spans past a trace's first 500 whose request was dropped (its trace was, or the
    /// retries ran out), each logged.
    pub spans_dropped: u64,
    /// NUL characters replaced by U+FFFD in traces when they ended: the server answers 202 for
    /// a trace containing one and then never stores it.
    pub nul_replaced: u64,
    /// Fields of records over [`max_record_bytes`](crate::ClientBuilder::max_record_bytes)
    /// replaced by a marker that names the field and its size.
    pub fields_cut: u64,
    /// Calls of the drop hook that panicked (each was caught; the worker went on).
    pub hook_panics: u64,
}

/// `scores: accepted 3, sent 3, …; traces: accepted 1, …; requests 4`, plus the rarer counters
/// when they are not zero.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scores: {}; traces: {}; requests {}",
            self.scores, self.traces, self.requests
        )?;
        for (n, what) in [
            (self.probes, "readiness probes"),
            (self.spans_added, "spans added"),
            (self.spans_dropped, "spans dropped"),
            (self.nul_replaced, "NUL characters replaced"),
            (self.fields_cut, "fields cut to fit max_record_bytes"),
            (self.hook_panics, "drop hook panics"),
        ] {
            if n > 0 {
                write!(f, "; {what} {n}")?;
            }
        }
        Ok(())
    }
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
/// dropped 2 (rejected 2)`; reasons with a count of zero are left out.
impl fmt::Display for RecordStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted {}, sent {}, pending {}, retried {} ({} ambiguous), dropped {}",
            self.accepted,
            self.sent,
            self.pending,
            self.retried,
            self.ambiguous,
            self.dropped.total(),
        )?;
        let reasons: Vec<String> = self
            .dropped
            .by_reason()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        if !reasons.is_empty() {
            write!(f, " ({})", reasons.join(", "))?;
        }
        Ok(())
    }
}

impl RecordStats {
    /// `accepted == sent + dropped + pending`: true for every snapshot; for tests and asserts.
    pub fn is_balanced(&self) -> bool {
        self.accepted == self.sent + self.dropped.total() + self.pending
    }
}

/// Records dropped, by reason (see [`DropReason`]). Each drop is also logged (rate-limited)
/// under target `pandaprobe`, and passed to the drop hook if one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Dropped {
    /// The queue was full when the record was handed in.
    pub queue_full: u64,
    /// The byte budget ([`max_queue_bytes`](crate::ClientBuilder::max_queue_bytes)) had no
    /// room for it when it was handed in.
    pub queue_bytes_full: u64,
    /// Handed in, in a forked child, to a client made before the fork.
    pub forked: u64,
    /// The server refused the record with a status that retrying cannot fix (401, 403, 422, …).
    pub rejected: u64,
    /// Every allowed retry failed, or the retry time ran out.
    pub retries_exhausted: u64,
    /// The account's trace quota was used up.
    pub quota_exceeded: u64,
    /// Not delivered when shutdown's deadline passed and never in flight then (queued, waiting
    /// for a retry or for its trace), or handed in after shutdown: lost.
    pub shutdown: u64,
    /// In flight when shutdown's deadline passed: abandoned without an answer, so the server
    /// may have stored them.
    pub shutdown_in_flight: u64,
    /// Held by the worker when it panicked.
    pub worker_failed: u64,
}

impl Dropped {
    /// All drops together.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }

    /// Each reason with its count.
    pub fn by_reason(&self) -> [(DropReason, u64); 9] {
        [
            (DropReason::QueueFull, self.queue_full),
            (DropReason::QueueBytesFull, self.queue_bytes_full),
            (DropReason::Forked, self.forked),
            (DropReason::Rejected, self.rejected),
            (DropReason::RetriesExhausted, self.retries_exhausted),
            (DropReason::QuotaExceeded, self.quota_exceeded),
            (DropReason::Shutdown, self.shutdown),
            (DropReason::ShutdownInFlight, self.shutdown_in_flight),
            (DropReason::WorkerFailed, self.worker_failed),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_is_derived_and_folded_when_the_worker_stops() {
        let c = Counters::default();
        c.accepted(RecordKind::Score, 5);
        c.sent(RecordKind::Score);
        c.dropped(RecordKind::Score, DropReason::Rejected, 1);
        let s = c.snapshot();
        assert_eq!(s.scores.pending, 3);
        assert!(s.scores.is_balanced());
        c.mark_worker_stopped();
        let s = c.snapshot();
        assert_eq!((s.scores.pending, s.scores.dropped.shutdown), (0, 3));
        assert!(s.scores.is_balanced());
        assert_eq!(s.traces, RecordStats::default());
    }

    #[test]
    fn a_dead_worker_folds_pending_into_worker_failed() {
        let c = Counters::default();
        c.accepted(RecordKind::Trace, 2);
        c.mark_worker_died();
        c.mark_worker_stopped(); // does not hide the death
        let s = c.snapshot();
        assert_eq!((s.traces.pending, s.traces.dropped.worker_failed), (0, 2));
    }

    #[test]
    fn display_lists_only_the_reasons_that_happened() {
        let c = Counters::default();
        c.accepted(RecordKind::Score, 3);
        c.sent(RecordKind::Score);
        c.dropped(RecordKind::Score, DropReason::QuotaExceeded, 2);
        c.request();
        let s = c.snapshot();
        assert_eq!(
            s.to_string(),
            "scores: accepted 3, sent 1, pending 0, retried 0 (0 ambiguous), dropped 2 \
             (quota_exceeded 2); traces: accepted 0, sent 0, pending 0, retried 0 \
             (0 ambiguous), dropped 0; requests 1"
        );
    }
}
