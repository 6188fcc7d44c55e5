//! The producer side: handing records in, with the full-queue policy, and asking the worker
//! to flush or shut down (the shared state and messages are in `protocol`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use tokio::sync::{mpsc, oneshot};

use crate::budget::Charge;
use crate::config::{Config, QueueFullPolicy};
use crate::drop_event::{DropEvent, DropReason, RecordKind};
use crate::error::{FlushError, ScoreError, Waiting};
use crate::protocol::{
    answer_slack, flush_request, shutdown_request, Control, MakeControl, Reply, Shared,
};
use crate::record::{Notice, Record};
use crate::record_size::{cut_score, cut_trace, score_bytes, trace_bytes};
use crate::score::Score;
use crate::stats::Stats;
use crate::trace_data::EndedTrace;

/// A record that could not be queued, counted as dropped, with why.
struct Refused {
    error: ScoreError,
    reason: DropReason,
    record: Record,
}

/// Counts a producer out of `enqueue` however it leaves.
struct Inside<'a>(&'a AtomicUsize);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

thread_local! {
    static ON_WORKER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as a worker's (for the drop hook's calls made there).
pub(crate) fn mark_worker_thread() {
    ON_WORKER_THREAD.with(|on| on.set(true));
}

/// Whether this is a worker's thread: nothing there may block on the queue.
pub(crate) fn on_worker_thread() -> bool {
    ON_WORKER_THREAD.with(std::cell::Cell::get)
}

/// What the client handles use to hand records to the worker and to ask it things. Traces hold
/// clones of it: it keeps the queue open, not the worker alive (only [`Client`](crate::Client)
/// handles own the worker).
#[derive(Clone)]
pub(crate) struct Producer {
    shared: Arc<Shared>,
    records: Sender<Record>,
    notices: Sender<Notice>,
    control: mpsc::UnboundedSender<Control>,
}

impl Producer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        records: Sender<Record>,
        notices: Sender<Notice>,
        control: mpsc::UnboundedSender<Control>,
    ) -> Producer {
        Producer {
            shared,
            records,
            notices,
            control,
        }
    }

    /// Tells the worker a trace was opened, so that scores for it wait for it. Best effort:
    /// with the notice channel full, such scores go at once and are retried until it is
    /// stored.
    pub(crate) fn trace_opened(&self, trace_id: uuid::Uuid) {
        let _ = self.notices.try_send(Notice::Opened(trace_id));
    }

    /// Whether this process is a fork of the one that made the client.
    pub(crate) fn forked(&self) -> bool {
        self.shared.forked()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
    }

    pub(crate) fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    #[inline]
    pub(crate) fn score(&self, mut score: Score) -> Result<(), ScoreError> {
        score.validate()?;
        let charge = self.charge_score(&mut score)?;
        self.enqueue(Record::Score(score, charge))
            .map_err(|refused| refused.error)
    }

    /// Cuts a score over `max_record_bytes` and charges it to the byte budget; a score that
    /// does not fit is counted as accepted and dropped, and refused.
    fn charge_score(&self, score: &mut Score) -> Result<Charge, ScoreError> {
        let limit = self.shared.config.max_record_bytes;
        let cut = cut_score(score, limit);
        if cut > 0 {
            self.shared.counters.fields_cut(cut);
            tracing::debug!(target: "pandaprobe", name = score.name(), "cut {cut} field(s) of a score over max_record_bytes ({limit})");
        }
        let bytes = score_bytes(score);
        match self.shared.budget.try_charge(bytes) {
            Some(charge) => Ok(charge),
            None => {
                let counters = &self.shared.counters;
                counters.accepted(RecordKind::Score, 1);
                let (error, reason) = self.budget_refusal(bytes);
                counters.dropped(RecordKind::Score, reason, 1);
                Err(error)
            }
        }
    }

    /// Why a record that does not fit the budget is refused: the client's own state first.
    fn budget_refusal(&self, bytes: usize) -> (ScoreError, DropReason) {
        match self.shared.refusal() {
            Some(error) => {
                let reason = refusal_reason(&error);
                (error, reason)
            }
            None => (
                ScoreError::QueueBytesFull {
                    record_bytes: bytes,
                    max_queue_bytes: self.shared.budget.limit(),
                },
                DropReason::QueueBytesFull,
            ),
        }
    }

    /// Takes a score made through an open trace: counted as accepted, cut and charged to the
    /// budget now, since it is held (with the trace) from now on.
    pub(crate) fn hold_score(&self, score: &mut Score) -> Result<Charge, ScoreError> {
        if self.shared.forked() {
            let counters = &self.shared.counters;
            counters.accepted(RecordKind::Score, 1);
            counters.dropped(RecordKind::Score, DropReason::Forked, 1);
            return Err(ScoreError::Forked);
        }
        let charge = self.charge_score(score)?;
        self.shared.counters.accepted(RecordKind::Score, 1);
        Ok(charge)
    }

    /// Queues an ended trace with the scores that wait for it. It has no error to return, so
    /// a refusal goes to the drop hook, for the trace and each of its scores.
    pub(crate) fn trace_ended(&self, mut trace: EndedTrace, nul_replaced: u64) {
        let counters = &self.shared.counters;
        counters.nul_replaced(nul_replaced);
        let limit = self.shared.config.max_record_bytes;
        let cut = cut_trace(&mut trace.data, limit);
        if cut > 0 {
            counters.fields_cut(cut);
            tracing::debug!(target: "pandaprobe", trace_id = %trace.data.trace_id, "cut {cut} field(s) of a trace over max_record_bytes ({limit})");
        }
        let bytes = trace_bytes(&trace.data);
        let refused = match self.shared.budget.try_charge(bytes) {
            Some(charge) => match self.enqueue(Record::Trace(Box::new(trace), charge)) {
                Ok(()) => return,
                Err(refused) => refused,
            },
            None => {
                counters.accepted(RecordKind::Trace, 1);
                let (error, reason) = self.budget_refusal(bytes);
                counters.dropped(RecordKind::Trace, reason, 1);
                counters.dropped(RecordKind::Score, reason, trace.scores.len() as u64);
                Refused {
                    error,
                    reason,
                    record: Record::Trace(Box::new(trace), Charge::none()),
                }
            }
        };
        let Record::Trace(trace, _) = refused.record else {
            return;
        };
        let id = trace.data.trace_id;
        let _ = self.notices.try_send(Notice::Abandoned(id));
        let message = Some(refused.error.to_string());
        let event = |kind, name: &str| {
            DropEvent::new(kind, refused.reason, id, name).with_answer(None, message.clone())
        };
        self.shared
            .call_hook(&event(RecordKind::Trace, &trace.data.name));
        for (score, _) in &trace.scores {
            self.shared
                .call_hook(&event(RecordKind::Score, score.name()));
        }
        tracing::debug!(target: "pandaprobe", trace_id = %id, "trace not queued: {}", refused.error);
    }

    /// Hands a record to the worker, or counts it dropped and says why.
    // The refusal hands the record back without an allocation (a full queue must not
    // allocate); the accepting path returns only the tag.
    #[allow(clippy::result_large_err)]
    fn enqueue(&self, record: Record) -> Result<(), Refused> {
        let shared = &*self.shared;
        shared.enqueuing.fetch_add(1, Ordering::SeqCst);
        let _inside = Inside(&shared.enqueuing);
        let before = shared.counters.accepted(record.kind(), 1);
        if let Some(error) = shared.refusal() {
            return Err(self.refuse(record, error));
        }
        let record = match self.records.try_send(record) {
            Ok(()) => None,
            Err(TrySendError::Full(record)) => {
                // A full queue must be drained now, not at the next tick: the batch-threshold
                // wake-up below never fires while every send fails (nor when `batch_size`
                // exceeds `max_queue_size`). Deduplicated like every wake-up.
                shared.wake_worker();
                match shared.config.queue_full {
                    QueueFullPolicy::DropNew => Some(record),
                    // A drop hook that scores runs on the worker's thread: waiting there for
                    // room would wait for the worker itself.
                    QueueFullPolicy::Block(_) if on_worker_thread() => Some(record),
                    QueueFullPolicy::Block(timeout) => {
                        match self.records.send_timeout(record, timeout) {
                            Ok(()) => None,
                            Err(SendTimeoutError::Timeout(record)) => Some(record),
                            Err(SendTimeoutError::Disconnected(record)) => {
                                return Err(self.refuse(record, ScoreError::ShutDown));
                            }
                        }
                    }
                }
            }
            Err(TrySendError::Disconnected(record)) => {
                let error = shared.refusal().unwrap_or(ScoreError::ShutDown);
                return Err(self.refuse(record, error));
            }
        };
        if let Some(record) = record {
            return Err(self.refuse(record, ScoreError::QueueFull));
        }
        // One wake-up per `batch_size` records at most; otherwise the worker's interval timer
        // picks them up. Counting acceptances, rather than asking the queue its length, keeps
        // the caller off the cache line the worker writes.
        if (before + 1).is_multiple_of(shared.config.batch_size as u64) {
            shared.wake_worker();
        }
        Ok(())
    }

    /// Counts a record that could not be queued (with the scores a trace carries) as dropped.
    fn refuse(&self, record: Record, error: ScoreError) -> Refused {
        let reason = refusal_reason(&error);
        let counters = &self.shared.counters;
        counters.dropped(record.kind(), reason, 1);
        if let Record::Trace(trace, _) = &record {
            counters.dropped(RecordKind::Score, reason, trace.scores.len() as u64);
        }
        Refused {
            error,
            reason,
            record,
        }
    }

    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.shared.forked() {
            return Err(FlushError::Forked);
        }
        self.request_blocking("flush", timeout, flush_request)
    }

    pub(crate) async fn flush_async(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.shared.forked() {
            return Err(FlushError::Forked);
        }
        self.request_async(timeout, flush_request)
            .await
            .unwrap_or_else(|| Err(self.gone()))
    }

    /// Asks the worker to shut down as [`shutdown`](Self::shutdown) does, without waiting for
    /// it: for the last client handle dropped on the worker's own thread (a drop hook that
    /// held one), where waiting would wait for itself.
    pub(crate) fn shutdown_in_background(&self, timeout: Duration) {
        let (reply, _nobody_waits) = crossbeam_channel::bounded(1);
        let _ = self
            .control
            .send(shutdown_request(timeout, Reply::Blocking(reply)));
    }

    /// Stops taking records and asks the worker to deliver what it can within `timeout`.
    pub(crate) fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.shared.forked() {
            return Err(FlushError::Forked);
        }
        self.shared.close();
        match self.request_blocking("shutdown", timeout, shutdown_request) {
            // The worker is gone: this is a repeated call; give the first call's outcome.
            Err(FlushError::ShutDown) => self.shared.final_result(),
            other => other,
        }
    }

    pub(crate) async fn shutdown_async(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.shared.forked() {
            return Err(FlushError::Forked);
        }
        self.shared.close();
        match self.request_async(timeout, shutdown_request).await {
            Some(Err(FlushError::ShutDown)) | None => self.shared.final_result(),
            Some(result) => result,
        }
    }

    /// Why a request could not be answered: the worker is gone, by shutdown or by a panic.
    fn gone(&self) -> FlushError {
        match self.shared.refusal() {
            Some(ScoreError::WorkerDied) => FlushError::WorkerDied,
            _ => FlushError::ShutDown,
        }
    }

    /// Sends a request to the worker and waits for its answer, on a plain channel: this works
    /// with no runtime and inside any runtime, since the worker runs on its own.
    fn request_blocking(
        &self,
        what: &str,
        timeout: Duration,
        make: MakeControl,
    ) -> Result<(), FlushError> {
        warn_if_on_async_runtime(what, timeout);
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self
            .control
            .send(make(timeout, Reply::Blocking(reply)))
            .is_err()
        {
            return Err(self.gone());
        }
        match answer.recv_timeout(timeout.saturating_add(answer_slack(timeout))) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let stats = self.stats();
                Err(FlushError::Timeout {
                    pending: stats.scores.pending + stats.traces.pending,
                    timeout,
                    waiting: Waiting::default(),
                })
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(self.gone()),
        }
    }

    /// `None` when the worker is gone without answering.
    async fn request_async(
        &self,
        timeout: Duration,
        make: MakeControl,
    ) -> Option<Result<(), FlushError>> {
        let (reply, answer) = oneshot::channel();
        self.control.send(make(timeout, Reply::Async(reply))).ok()?;
        answer.await.ok()
    }
}

/// The drop reason of a refusal at the call.
fn refusal_reason(error: &ScoreError) -> DropReason {
    match error {
        ScoreError::QueueFull => DropReason::QueueFull,
        ScoreError::QueueBytesFull { .. } => DropReason::QueueBytesFull,
        ScoreError::Forked => DropReason::Forked,
        ScoreError::WorkerDied => DropReason::WorkerFailed,
        _ => DropReason::Shutdown,
    }
}

/// A blocking call on a thread that drives async tasks stalls all of them: say so, once.
fn warn_if_on_async_runtime(what: &str, timeout: Duration) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if tokio::runtime::Handle::try_current().is_ok() && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "pandaprobe",
            "blocking {what}() called inside a tokio runtime: it blocks this thread for up to \
             {timeout:?}, and every task on it; in async code use {what}_async() (warned once)"
        );
    }
}
