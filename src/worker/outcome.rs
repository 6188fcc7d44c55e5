//! What the worker does with each answer: the retry policy's verdict applied to the record,
//! its lane (the rate-limit window learns), the trace gate (a trace accepted or dropped), and
//! the counting of its outcome. Readiness probes' answers go to `readiness`.

use tokio::time::Instant;

use super::job::Job;
use super::rate_window::Answer;
use super::retry::Verdict;
use super::transport::{named_limit, Attempt};
use super::{Route, Worker};
use crate::drop_event::DropReason;

impl Worker {
    pub(super) fn on_done(&mut self, key: u64, attempt: Attempt, now: Instant) {
        if let Some(trace_id) = self.probes.remove(&key) {
            self.on_probe_done(trace_id, &attempt, now);
            return;
        }
        let Some(mut job) = self.sending.remove(&key) else {
            return;
        };
        job.note(&attempt);
        let pooled = !job.retry.fresh_connection();
        let spans = job.chunk > 0;
        let verdict = self.policy.decide(&mut job.retry, &attempt, spans, now);
        let route = Route::of(&job);
        let answer = match &verdict {
            Verdict::Delivered => Answer::Admitted,
            // Answers of the handler: the limiter let them through.
            _ if attempt.status() == Some(500) => Answer::Admitted,
            _ if spans && attempt.status() == Some(404) => Answer::Admitted,
            Verdict::RateLimited { retry_after } => Answer::RateLimited {
                retry_after: *retry_after,
                named: named_limit(attempt.message()),
            },
            _ => Answer::Other,
        };
        self.lane(route).finished(now, job.sent_at, answer);
        if pooled && attempt.status() == Some(500) {
            // The server closed that connection without saying so: keep the pool off it.
            self.transport.renew_pool();
        }
        self.log_attempt(&job, &attempt, &verdict);
        match verdict {
            Verdict::Delivered => {
                if route == Route::Trace {
                    self.gate.trace_accepted(job.trace_id, now);
                }
                self.finish(job, None, now);
            }
            Verdict::Drop(reason) => self.drop_job(job, reason, now),
            Verdict::RetryAt { at, ambiguous } => {
                self.shared.counters.retried(job.kind, ambiguous);
                self.retries.push(at, job);
            }
            Verdict::RateLimited { .. } => {
                self.shared.counters.retried(job.kind, false);
                self.lane(route).push_front(job);
            }
        }
    }

    fn log_attempt(&self, job: &Job, attempt: &Attempt, verdict: &Verdict) {
        let attempts = job.retry.attempts();
        let (kind, request_id, status) = (job.kind, &job.request_id, attempt.status());
        let message = attempt.message();
        if self.shared.config.debug {
            tracing::info!(target: "pandaprobe", %kind, ?request_id, attempts, ?status, ?verdict, message);
        } else {
            tracing::debug!(target: "pandaprobe", %kind, ?request_id, attempts, ?status, ?verdict, message);
        }
    }

    /// Drops a job in hand. A trace takes what waits for it along: its scores and its spans
    /// past the first request's.
    fn drop_job(&mut self, job: Job, reason: DropReason, now: Instant) {
        if Route::of(&job) == Route::Trace {
            for mut held in self.gate.trace_dropped(job.trace_id) {
                held.last_status = job.last_status;
                held.last_message = Some(format!(
                    "its trace was not stored ({reason}): {}",
                    job.last_message.as_deref().unwrap_or_default()
                ));
                self.settle(held, Some(reason), now);
            }
        }
        self.finish(job, Some(reason), now);
    }

    /// Counts the outcome of a job in hand and forgets it.
    pub(super) fn finish(&mut self, job: Job, dropped: Option<DropReason>, now: Instant) {
        self.settle(job, dropped, now);
    }

    /// Counts a job's outcome (in hand or held by the gate). Spans added to a trace are part of
    /// the trace's record: they are counted as spans, not as a record of their own.
    pub(super) fn settle(&mut self, job: Job, dropped: Option<DropReason>, now: Instant) {
        match dropped {
            None if job.chunk > 0 => self.shared.counters.spans_added(job.chunk as u64),
            None => self.shared.counters.sent(job.kind),
            Some(reason) if job.chunk > 0 => {
                self.losses
                    .spans_dropped(&job.drop_event(reason), job.chunk, now);
            }
            Some(reason) => {
                self.waiters.dropped(job.seq, reason);
                self.losses.dropped(&job.drop_event(reason), now);
            }
        }
        self.barrier.close(job.seq);
    }
}
