//! Taking records off the queue: notices of opened traces first, then records, bounded per
//! turn by count and bytes; a trace becomes its job, the jobs of its spans past the first
//! request's and of its scores (held by the trace gate), and a score goes to its lane or waits.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::job::Job;
use super::{readiness, Worker};
use crate::body::{score_body, spans_bodies, trace_body};
use crate::budget::Charge;
use crate::drop_event::{DropEvent, DropReason, RecordKind};
use crate::record::{Notice, Record};
use crate::score::Score;
use crate::text::Text;

/// The most the worker serializes between two looks at its control channel, in budget
/// bytes: with records of megabytes, a turn of `batch_size` records could take long enough to
/// hold a flush or shutdown past its deadline.
const INTAKE_BYTES_PER_TURN: usize = 4 * 1024 * 1024;

/// How long scores for a trace still open in this process wait for it to end before they are
/// sent anyway (and retried until it is stored): as long as `TracingLayer` lets a trace stay
/// open. With no room left for waiting scores, those of the trace open longest go sooner.
const OPEN_TRACE_HOLD: Duration = Duration::from_secs(3600);

impl Worker {
    /// Takes records off the queue while there is room for them, after the notices: a trace
    /// is known open before any score for it is taken.
    pub(super) fn pull(&mut self, now: Instant) {
        while let Ok(notice) = self.notices.try_recv() {
            match notice {
                Notice::Opened(id) => self.gate.trace_opened(id, OPEN_TRACE_HOLD, now),
                Notice::Abandoned(id) => {
                    for job in self.gate.trace_abandoned(id) {
                        self.barrier.open(job.seq);
                        self.scores.push(job);
                    }
                }
            }
        }
        for job in self.gate.make_room() {
            // Scores of a trace open too long to keep waiting: flushes wait for them again.
            self.barrier.open(job.seq);
            self.scores.push(job);
        }
        // Bounded by count and by bytes, so that the loop answers flush and shutdown in time
        // however large the records are.
        let (mut taken, mut bytes) = (0, 0);
        let most = self.shared.config.batch_size.clamp(64, 1024);
        self.more_to_take = false;
        while self.in_hand() < self.window && !self.gate.is_full() {
            if taken >= most || bytes >= INTAKE_BYTES_PER_TURN {
                self.more_to_take = !self.records.is_empty();
                break;
            }
            let Ok(record) = self.records.try_recv() else {
                break;
            };
            taken += 1;
            let seq = self.barrier.take();
            match record {
                Record::Score(score, charge) => {
                    bytes += charge.bytes();
                    if let Some(job) = self.score_job(seq, score, charge, now) {
                        self.admit(job);
                    }
                }
                Record::Trace(trace, mut charge) => {
                    bytes += charge.bytes();
                    let ended = *trace;
                    let (data, scores) = (ended.data, ended.scores);
                    let config = &self.shared.config;
                    let body = trace_body(
                        &data,
                        config.environment.as_deref(),
                        config.release.as_deref(),
                    );
                    let probe = readiness::probe_for(&data, body.len());
                    let name: Text = data.name.as_str().into();
                    // Spans past the first request's wait, like the scores, for the trace to
                    // be stored; each part frees its share of the budget when it is done.
                    let mut held = Vec::new();
                    for (part, spans) in spans_bodies(&data) {
                        let share = charge.split_off(part.len());
                        let mut job = Job::new(
                            RecordKind::Trace,
                            seq,
                            data.trace_id,
                            name.clone(),
                            part,
                            share,
                            now,
                        );
                        job.chunk = spans;
                        self.barrier.open(seq);
                        held.push(job);
                    }
                    held.extend(
                        scores
                            .into_iter()
                            .filter_map(|(s, charge)| self.score_job(seq, s, charge, now)),
                    );
                    // Scores that waited while it was open: flushes wait for them from now on.
                    for job in self.gate.take_open(data.trace_id) {
                        self.barrier.open(job.seq);
                        held.push(job);
                    }
                    self.gate.trace_queued(data.trace_id, held, probe);
                    let job = Job::new(
                        RecordKind::Trace,
                        seq,
                        data.trace_id,
                        name,
                        body,
                        charge,
                        now,
                    );
                    self.barrier.open(seq);
                    self.traces.push(job);
                }
            }
        }
    }

    /// A score as a job, with its body; `None` (counted) if it somehow lacks a trace id.
    fn score_job(
        &mut self,
        seq: u64,
        mut score: Score,
        charge: Charge,
        now: Instant,
    ) -> Option<Job> {
        let Some(trace_id) = score.trace_id() else {
            // `score()` validated the id; should that ever change, still count it.
            let event = DropEvent::new(
                RecordKind::Score,
                DropReason::Rejected,
                Uuid::nil(),
                score.name(),
            );
            self.losses.dropped(&event, now);
            return None;
        };
        let body = score_body(trace_id, &score);
        self.barrier.open(seq);
        Some(Job::new(
            RecordKind::Score,
            seq,
            trace_id,
            score.take_name(),
            body,
            charge,
            now,
        ))
    }

    /// A score goes to its lane unless the trace gate holds it. A flush does not wait for a
    /// score whose trace is still open here, as for one made with `Trace::score`.
    fn admit(&mut self, job: Job) {
        if self.gate.is_open(&job.trace_id) {
            self.barrier.close(job.seq);
        }
        if let Some(job) = self.gate.admit(job.trace_id, job) {
            self.scores.push(job);
        }
    }
}
