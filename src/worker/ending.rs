//! How the worker's run ends: at shutdown, what is still undelivered is dropped and counted
//! (requests in flight apart: the server may have stored them); after a panic, everything it
//! held is counted as `worker_failed` and every caller is told.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::job::Job;
use super::Worker;
use crate::drop_event::{DropEvent, DropReason, RecordKind};
use crate::record::Record;

impl Worker {
    /// Ends the run: what is still undelivered is dropped and counted, every caller answered.
    pub(super) fn finish_shutdown(&mut self, now: Instant) {
        let waiting = self.waiting();
        let abandoned = self.abandon_all(DropReason::Shutdown, DropReason::ShutdownInFlight, now);
        if abandoned > 0 {
            tracing::warn!(
                target: "pandaprobe",
                "shutdown: {abandoned} record(s) not delivered in time were dropped"
            );
        }
        let result = self.waiters.finish_shutdown(abandoned, waiting);
        self.shared.set_final_result(result);
        self.losses.report_counters(now, true);
    }

    /// Drops everything held or queued: `in_flight` for requests under way, `reason` for the
    /// rest. Returns how many.
    fn abandon_all(&mut self, reason: DropReason, in_flight: DropReason, now: Instant) -> u64 {
        // Answers that have already arrived count as what they are, not as abandoned.
        while let Some(Some((key, attempt))) = self.in_flight.next().now_or_never() {
            self.on_done(key, attempt, now);
        }
        self.in_flight.clear();
        let mut dropped = 0;
        let under_way: Vec<Job> = self.sending.drain().map(|(_, job)| job).collect();
        self.probes.clear();
        // Spans added to a trace count as spans, not as records.
        for job in under_way {
            dropped += u64::from(job.chunk == 0);
            self.finish(job, Some(in_flight), now);
        }
        let mut in_hand: Vec<Job> = self.scores.drain().chain(self.traces.drain()).collect();
        in_hand.extend(self.spans.drain());
        in_hand.extend(self.retries.drain());
        for job in in_hand {
            dropped += u64::from(job.chunk == 0);
            self.finish(job, Some(reason), now);
        }
        for job in self.gate.drain() {
            dropped += u64::from(job.chunk == 0);
            self.settle(job, Some(reason), now);
        }
        while let Ok(record) = self.records.try_recv() {
            for event in record_events(record, reason) {
                self.losses.dropped(&event, now);
                dropped += 1;
            }
        }
        self.barrier.clear();
        dropped
    }

    /// The last look at the queue, once the run is over (shut down or died, so producers are
    /// refused from now on): once no producer is still inside `enqueue`, what raced into the
    /// queue after the worker's last drain is counted and hooked as dropped, not freed with
    /// the channel unreported. A producer blocked for room (`QueueFullPolicy::Block`) gets it
    /// from these drains; the wait is bounded all the same.
    pub(super) fn sweep_queue(&mut self, reason: DropReason) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let now = Instant::now();
        loop {
            while let Ok(record) = self.records.try_recv() {
                for event in record_events(record, reason) {
                    self.losses.dropped(&event, now);
                }
            }
            if !self.shared.enqueuing() && self.records.is_empty() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::yield_now();
        }
    }

    /// The worker panicked: count what it held as lost, tell every caller, refuse new records.
    pub(super) fn died(&mut self, panic: &(dyn Any + Send)) {
        self.shared.mark_dead();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let now = Instant::now();
        // The state may be half-updated; whatever this cannot count, the counters still show
        // as `worker_failed`, since `pending` is derived.
        let abandoned = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.abandon_all(DropReason::WorkerFailed, DropReason::WorkerFailed, now)
        }));
        self.waiters.fail_all();
        // A panicking tracing layer may be what killed the worker: do not let it again.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            tracing::error!(
                target: "pandaprobe",
                "the pandaprobe worker panicked ({message}); {} record(s) it held were dropped \
                 as worker_failed, and the client accepts no more",
                abandoned.as_ref().map_or(0, |n| *n)
            );
        }));
    }
}

/// The drop events of a record never taken off the queue: a score, or a trace and its scores.
fn record_events(record: Record, reason: DropReason) -> Vec<DropEvent> {
    match record {
        Record::Score(score, _) => {
            let trace_id = score.trace_id().unwrap_or_default();
            vec![DropEvent::new(
                RecordKind::Score,
                reason,
                trace_id,
                score.name(),
            )]
        }
        Record::Trace(trace, _) => {
            let id = trace.data.trace_id;
            let mut events = vec![DropEvent::new(
                RecordKind::Trace,
                reason,
                id,
                trace.data.name,
            )];
            events.extend(
                trace
                    .scores
                    .iter()
                    .map(|(s, _)| DropEvent::new(RecordKind::Score, reason, id, s.name())),
            );
            events
        }
    }
}
