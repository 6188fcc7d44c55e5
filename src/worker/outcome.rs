//! What the worker does with each answer: the retry policy's verdict applied to the record,
//! its lane (the rate-limit window learns), the trace gate (a trace accepted, a probe's
//! result), and the counting of its outcome.

use tokio::time::Instant;

use super::job::Job;
use super::rate_window::Answer;
use super::retry::Verdict;
use super::transport::{named_limit, Attempt};
use super::Worker;
use crate::drop_event::{DropReason, RecordKind};

impl Worker {
    pub(super) fn on_done(&mut self, key: u64, attempt: Attempt, now: Instant) {
        let Some(mut job) = self.sending.remove(&key) else {
            return;
        };
        job.note(&attempt);
        let pooled = !job.retry.fresh_connection();
        let verdict = self
            .policy
            .decide(&mut job.retry, &attempt, job.probe.is_some(), now);
        let answer = match &verdict {
            Verdict::Delivered => Answer::Admitted,
            _ if attempt.status() == Some(500) => Answer::Admitted,
            Verdict::RateLimited { retry_after } => Answer::RateLimited {
                retry_after: *retry_after,
                named: named_limit(attempt.message()),
            },
            _ => Answer::Other,
        };
        self.lane(job.kind).finished(now, job.sent_at, answer);
        if pooled && attempt.status() == Some(500) {
            // The server closed that connection without saying so: keep the pool off it.
            self.transport.renew_pool();
        }
        self.log_attempt(&job, &attempt, &verdict);
        match verdict {
            Verdict::Delivered => {
                if job.kind == RecordKind::Trace {
                    self.gate.trace_accepted(job.trace_id, job.spans, now);
                }
                if let Some(probe) = job.probe {
                    for sibling in self.gate.probe_delivered(job.trace_id, probe, now) {
                        self.scores.push(sibling);
                        self.active += 1;
                    }
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
                self.lane(job.kind).push_front(job);
            }
            Verdict::TraceNotStored => {
                self.shared.counters.retried(job.kind, false);
                let trace_id = job.trace_id;
                match job.probe.take() {
                    Some(probe) => {
                        self.active -= 1;
                        self.gate.probe_not_stored(trace_id, job, probe, now);
                    }
                    // Only probes wait for their trace; should that change, retry anyway.
                    None => self.retries.push(now, job),
                }
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

    /// Drops a job in hand. A trace takes the scores waiting for it along; a probe that gave
    /// up waiting for its trace takes its siblings, any other lets them go on their own.
    fn drop_job(&mut self, job: Job, reason: DropReason, now: Instant) {
        let gave_up_on_trace = job.probe.is_some()
            && reason == DropReason::RetriesExhausted
            && job.last_status == Some(500);
        if job.kind == RecordKind::Trace || gave_up_on_trace {
            for mut held in self.gate.trace_dropped(job.trace_id) {
                held.last_status = job.last_status;
                held.last_message = Some(format!(
                    "its trace was not stored ({reason}): {}",
                    job.last_message.as_deref().unwrap_or_default()
                ));
                self.settle(held, Some(reason), now);
            }
        } else if job.probe.is_some() {
            for sibling in self.gate.trace_dropped(job.trace_id) {
                self.scores.push(sibling);
                self.active += 1;
            }
        }
        self.finish(job, Some(reason), now);
    }

    /// Counts the outcome of a job in hand and forgets it.
    pub(super) fn finish(&mut self, job: Job, dropped: Option<DropReason>, now: Instant) {
        self.settle(job, dropped, now);
        self.active -= 1;
    }

    /// Counts a job's outcome (in hand or held by the gate).
    pub(super) fn settle(&mut self, job: Job, dropped: Option<DropReason>, now: Instant) {
        match dropped {
            None => self.shared.counters.sent(job.kind),
            Some(reason) => {
                self.waiters.dropped(job.seq, reason);
                self.losses.dropped(&job.drop_event(reason), now);
            }
        }
        self.barrier.close(job.seq);
    }
}
