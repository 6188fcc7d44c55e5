//! What waits for a trace to be stored. The server refuses (500) a score whose trace it has
//! not stored yet, and answers 404 to spans added to it, and it stores a trace a while after
//! its 202: tens of milliseconds on an idle server, seconds or more on a busy one. So the
//! scores of a trace this client sent, and the spans past the first 500, wait here, outside
//! the requests being sent, while the worker asks the server whether the trace is stored
//! (a readiness probe, on the trace's own rate-limit path, see `schedule`). Once it is, they
//! all go at once; no score is sent to a trace the server has not stored.
//!
//! Only the oldest few traces are asked about at a time (4, up to 64 while the server is found
//! to have stored traces at the first or second question: it keeps up, and the questions
//! should too; halved when one is not stored at the third):
//! the server stores in roughly the order it accepted, so when one is stored, the older ones
//! are asked again at once. Memory:
//! at most `capacity` held jobs, and at most `max_entries` traces remembered that hold none.

mod open;
mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use schedule::ProbeSchedule;

/// How many of the oldest accepted traces are asked about at once, at least and at most.
const PROBED_AT_ONCE: usize = 4;
const MOST_PROBED_AT_ONCE: usize = 64;

/// How to ask the server whether a trace is stored, chosen by what the answers cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeRequest {
    /// `GET /traces/{id}`: 66 B while not stored, then the whole trace once (small traces).
    Get,
    /// `POST /traces/{id}/spans` with one span already sent, exactly as sent: the server
    /// upserts it unchanged and answers a few bytes, 404 until the trace is stored.
    Span(Bytes),
}

/// What a readiness probe's answer said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    Stored,
    /// 404, a failure, or a 5xx: ask again later.
    NotYet,
    /// The path's rate limit: ask again after this long.
    Paused(Duration),
    /// An answer that no later probe will change (this server cannot say): stop waiting.
    Unknowable,
}

/// What became of the jobs held for a trace after a probe's answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Released<J> {
    /// They go now.
    Go(Vec<J>),
    /// The trace was not stored within the retry time: they are dropped.
    Expired(Vec<J>),
    Waiting,
}

enum Entry<J> {
    /// The trace is still open in this process: scores for it wait for it to end, at most
    /// until the timer (a trace left open that long gets its scores sent anyway).
    Open { held: Vec<J>, timer: (Instant, u64) },
    /// The trace's request has not been answered yet.
    Sending { held: Vec<J>, probe: ProbeRequest },
    /// Accepted (202); waiting until the server says it is stored.
    Storing {
        held: Vec<J>,
        /// Acceptance order.
        order: u64,
        probe: ProbeRequest,
        schedule: ProbeSchedule,
    },
}

impl<J> Entry<J> {
    fn held(&mut self) -> &mut Vec<J> {
        match self {
            Entry::Open { held, .. }
            | Entry::Sending { held, .. }
            | Entry::Storing { held, .. } => held,
        }
    }
}

pub(crate) struct TraceGate<J> {
    entries: HashMap<Uuid, Entry<J>>,
    /// When each open trace's scores stop waiting for it.
    open_timers: BTreeMap<(Instant, u64), Uuid>,
    /// Accepted traces that hold jobs, by acceptance order: the ones asked about.
    accepted: BTreeMap<u64, Uuid>,
    /// Accepted traces that hold nothing (yet), by acceptance order: remembered so that a
    /// score taken off the queue after its trace's 202 still waits for the trace, and
    /// forgotten oldest first beyond `max_entries`.
    idle: BTreeMap<u64, Uuid>,
    next_seq: u64,
    held: usize,
    capacity: usize,
    max_entries: usize,
    /// How long after its 202 a trace is waited for (the retry time).
    max_wait: Duration,
    /// How many of the oldest are asked about now.
    probed_at_once: usize,
}

impl<J> TraceGate<J> {
    pub(crate) fn new(capacity: usize, max_wait: Duration) -> TraceGate<J> {
        TraceGate {
            entries: HashMap::new(),
            open_timers: BTreeMap::new(),
            accepted: BTreeMap::new(),
            idle: BTreeMap::new(),
            next_seq: 0,
            held: 0,
            capacity,
            max_entries: capacity.max(1024),
            max_wait,
            probed_at_once: PROBED_AT_ONCE,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Jobs held in all.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// No room for more held scores: the worker stops taking records off the queue.
    pub(crate) fn is_full(&self) -> bool {
        self.held >= self.capacity
    }

    /// Traces remembered (for tests of the bound).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.entries.len()
    }

    /// A trace is about to be sent, with the jobs that wait for it to be stored (its scores,
    /// its spans past the first request's) and the way to ask whether it is.
    pub(crate) fn trace_queued(&mut self, trace_id: Uuid, jobs: Vec<J>, probe: ProbeRequest) {
        self.held += jobs.len();
        let mut held = match self.entries.remove(&trace_id) {
            Some(Entry::Open { held, timer }) => {
                self.open_timers.remove(&timer);
                held
            }
            Some(Entry::Sending { held, .. }) => held,
            Some(Entry::Storing {
                held,
                order,
                probe,
                schedule,
            }) => {
                // Sent again while the first is being stored: it keeps its place (and is asked
                // about from now on if it held nothing so far).
                if held.is_empty() && !jobs.is_empty() && self.idle.remove(&order).is_some() {
                    self.accepted.insert(order, trace_id);
                }
                let mut entry = Entry::Storing {
                    held,
                    order,
                    probe,
                    schedule,
                };
                entry.held().extend(jobs);
                self.entries.insert(trace_id, entry);
                return;
            }
            None => Vec::new(),
        };
        held.extend(jobs);
        self.entries
            .insert(trace_id, Entry::Sending { held, probe });
    }

    /// A score: held if its trace is on its way to being stored, else handed back to go now.
    pub(crate) fn admit(&mut self, trace_id: Uuid, job: J) -> Option<J> {
        let Some(entry) = self.entries.get_mut(&trace_id) else {
            return Some(job);
        };
        if let Entry::Storing { held, order, .. } = entry {
            if held.is_empty() && self.idle.remove(order).is_some() {
                self.accepted.insert(*order, trace_id);
            }
        }
        entry.held().push(job);
        self.held += 1;
        None
    }

    /// The server accepted the trace (202) at `now`: what it holds waits for the server to
    /// say it is stored. One that holds nothing is remembered idle, unasked, for its scores
    /// still in the queue.
    pub(crate) fn trace_accepted(&mut self, trace_id: Uuid, now: Instant) {
        let (held, probe) = match self.entries.remove(&trace_id) {
            Some(Entry::Sending { held, probe }) => (held, probe),
            Some(entry @ Entry::Storing { .. }) => {
                self.entries.insert(trace_id, entry);
                return;
            }
            Some(Entry::Open { held, timer }) => {
                self.open_timers.remove(&timer);
                (held, ProbeRequest::Get)
            }
            None => return,
        };
        let order = self.seq();
        if held.is_empty() {
            self.idle.insert(order, trace_id);
            self.bound_idle();
        } else {
            self.accepted.insert(order, trace_id);
        }
        self.entries.insert(
            trace_id,
            Entry::Storing {
                held,
                order,
                probe,
                schedule: ProbeSchedule::new(now),
            },
        );
    }

    /// The trace was dropped (or its scores gave up): its held jobs go with it.
    pub(crate) fn trace_dropped(&mut self, trace_id: Uuid) -> Vec<J> {
        let Some(mut entry) = self.entries.remove(&trace_id) else {
            return Vec::new();
        };
        match &entry {
            Entry::Storing { order, .. } => {
                self.accepted.remove(order);
                self.idle.remove(order);
            }
            Entry::Open { timer, .. } => {
                self.open_timers.remove(timer);
            }
            Entry::Sending { .. } => {}
        }
        let held = std::mem::take(entry.held());
        self.held -= held.len();
        held
    }

    /// The probes to send now, at most `room`: among the oldest accepted traces, those whose
    /// time has come and that have no probe out.
    pub(crate) fn due_probes(&mut self, now: Instant, room: usize) -> Vec<(Uuid, ProbeRequest)> {
        let mut due = Vec::new();
        for id in self.accepted.values().take(self.probed_at_once) {
            if due.len() >= room {
                break;
            }
            if let Some(Entry::Storing {
                probe, schedule, ..
            }) = self.entries.get_mut(id)
            {
                if schedule.is_due(now) {
                    schedule.sent();
                    due.push((*id, probe.clone()));
                }
            }
        }
        due
    }

    /// A probe of the trace was answered at `now`.
    pub(crate) fn probe_answered(
        &mut self,
        trace_id: Uuid,
        readiness: Readiness,
        now: Instant,
    ) -> Released<J> {
        let Some(Entry::Storing {
            order, schedule, ..
        }) = self.entries.get_mut(&trace_id)
        else {
            return Released::Waiting;
        };
        let order = *order;
        let asked = schedule.answers();
        match readiness {
            Readiness::Stored => {
                // Found at the first or second question: the server keeps up.
                if asked <= 1 {
                    self.probed_at_once = (self.probed_at_once + 1).min(MOST_PROBED_AT_ONCE);
                }
                // The server stores in about the order it accepted: the older ones likely too
                // (only those being asked about: the rest are asked at once when their turn
                // comes, and walking them all would cost a pass per answer).
                let older: Vec<Uuid> = self
                    .accepted
                    .range(..order)
                    .take(self.probed_at_once)
                    .map(|(_, id)| *id)
                    .collect();
                for id in older {
                    if let Some(Entry::Storing { schedule, .. }) = self.entries.get_mut(&id) {
                        schedule.hurry(now);
                    }
                }
                return Released::Go(self.trace_dropped(trace_id));
            }
            Readiness::Unknowable => return Released::Go(self.trace_dropped(trace_id)),
            Readiness::NotYet => {
                schedule.not_yet(now);
                // Not stored at the third question or later: the server lags, so fewer
                // questions. (The first one may just come a little early.)
                if asked >= 2 {
                    self.probed_at_once = (self.probed_at_once / 2).max(PROBED_AT_ONCE);
                }
            }
            Readiness::Paused(wait) => schedule.paused(now, wait),
        }
        if schedule.waited(now) >= self.max_wait {
            return Released::Expired(self.trace_dropped(trace_id));
        }
        Released::Waiting
    }

    /// The next time there is something to do: a probe, or an open trace's time running out.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let open = self.open_timers.first_key_value().map(|((at, _), _)| *at);
        let probes = self
            .accepted
            .values()
            .take(self.probed_at_once)
            .filter_map(|id| match self.entries.get(id) {
                Some(Entry::Storing { schedule, .. }) => schedule.next_at(),
                _ => None,
            });
        open.into_iter().chain(probes).min()
    }

    /// Every held job (at shutdown).
    pub(crate) fn drain(&mut self) -> Vec<J> {
        let ids: Vec<Uuid> = self.entries.keys().copied().collect();
        ids.into_iter()
            .flat_map(|id| self.trace_dropped(id))
            .collect()
    }

    /// Forgets the accepted traces that hold nothing, oldest first, beyond `max_entries`.
    fn bound_idle(&mut self) {
        while self.idle.len() > self.max_entries {
            if let Some((_, id)) = self.idle.pop_first() {
                self.entries.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
