//! Scores held for their trace. The server refuses (500) a score whose trace it has not stored
//! yet, and stores traces a while after accepting them. So a score for a trace this client
//! sent waits here, outside the requests being sent, until the trace can be stored: then one
//! score goes as a probe. If it is delivered, the trace's other scores follow at once; if the
//! server answers 500 (not stored yet), they all wait on, and the model learns the server is
//! slower. One probe per trace, not one failure per score.
//!
//! When held scores pile up (an eighth of the room), the newest trace is probed before its
//! predicted time: if it is stored, so is everything sent before it (first come first served),
//! and the model learns the server is faster. Memory: at most `capacity` held scores, and at
//! most `max_entries` traces remembered without held scores.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::storage_model::StorageModel;

mod answers;
mod early;
mod timers;

/// The least wait before probing a trace again after it was found not stored.
const MIN_REPROBE: Duration = Duration::from_millis(50);
/// How soon to look again for a trace to probe early when none is waiting.
const EARLY_LOOK: Duration = Duration::from_millis(10);
/// How many of the newest traces the early probe looks through: a bound on work per turn.
const NEWEST_LOOKED_AT: usize = 64;

/// Why a probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// At the time the model predicted.
    Due,
    /// Before it, because held scores pile up.
    Early,
    /// Before shutdown's deadline, for a trace the model has stored only after it: without
    /// a try, its scores are certainly lost; with one, they may go.
    LastChance,
}

enum Entry<J> {
    /// The trace is still open in this process: scores for it wait for it to end, at most
    /// until the timer (a trace left open that long gets its scores sent anyway).
    Open { held: Vec<J>, timer: (Instant, u64) },
    /// The trace's request has not been answered yet.
    Sending { held: Vec<J> },
    /// Accepted (202); waiting until it can have been stored.
    Storing {
        held: Vec<J>,
        /// Acceptance order, for "everything sent before it".
        order: u64,
        /// Its timer's key; `None` while a probe is out.
        timer: Option<(Instant, u64)>,
        probing: Option<Probe>,
        accepted_at: Instant,
        /// When the server can have stored it at the earliest: its own storing time, with
        /// nothing queued before it.
        ready_at: Instant,
        /// When the model first predicted it stored.
        predicted: Instant,
        /// Its size, to time it again when the model learns.
        spans: usize,
        /// Its last-chance probe went (there is one at most).
        last_chance_spent: bool,
    },
}

impl<J> Entry<J> {
    fn held(&mut self) -> &mut Vec<J> {
        match self {
            Entry::Open { held, .. } | Entry::Sending { held } | Entry::Storing { held, .. } => {
                held
            }
        }
    }
}

pub(crate) struct TraceGate<J> {
    entries: HashMap<Uuid, Entry<J>>,
    /// When each accepted trace is due for its probe.
    timers: BTreeMap<(Instant, u64), Uuid>,
    /// Accepted traces by acceptance order.
    accepted: BTreeMap<u64, Uuid>,
    next_seq: u64,
    model: StorageModel,
    held: usize,
    capacity: usize,
    max_entries: usize,
    /// Entries beyond which the next bound check runs (amortises it).
    next_bound_check: usize,
    early_probe_out: bool,
    /// The trace the next early probe aims at, chosen when it was the newest.
    early_target: Option<Uuid>,
}

impl<J> TraceGate<J> {
    pub(crate) fn new(capacity: usize, now: Instant) -> TraceGate<J> {
        TraceGate {
            entries: HashMap::new(),
            timers: BTreeMap::new(),
            accepted: BTreeMap::new(),
            next_seq: 0,
            model: StorageModel::new(now),
            held: 0,
            capacity,
            max_entries: capacity.max(1024),
            next_bound_check: capacity.max(1024),
            early_probe_out: false,
            early_target: None,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Scores held in all.
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

    /// A trace was opened in this process: scores for it wait until it has ended and is
    /// stored, or until `hold_open` has passed.
    pub(crate) fn trace_opened(&mut self, trace_id: Uuid, hold_open: Duration, now: Instant) {
        if self.entries.contains_key(&trace_id) {
            return;
        }
        let timer = (now + hold_open, self.seq());
        self.timers.insert(timer, trace_id);
        self.entries.insert(
            trace_id,
            Entry::Open {
                held: Vec::new(),
                timer,
            },
        );
        self.bound_entries();
    }

    /// Whether the trace is open in this process (its scores wait without holding up a flush).
    pub(crate) fn is_open(&self, trace_id: &Uuid) -> bool {
        matches!(self.entries.get(trace_id), Some(Entry::Open { .. }))
    }

    /// The trace has ended: the scores that waited while it was open, to be queued with it.
    pub(crate) fn take_open(&mut self, trace_id: Uuid) -> Vec<J> {
        self.trace_abandoned(trace_id)
    }

    /// With no room left, the scores waiting for the trace open longest go now (and are
    /// retried until it is stored), rather than the whole pipeline stopping for it.
    pub(crate) fn make_room(&mut self) -> Vec<J> {
        if !self.is_full() {
            return Vec::new();
        }
        let oldest_open = self.timers.values().copied().find(
            |id| matches!(self.entries.get(id), Some(Entry::Open { held, .. }) if !held.is_empty()),
        );
        match oldest_open.and_then(|id| self.entries.get_mut(&id)) {
            Some(entry) => {
                let released = std::mem::take(entry.held());
                self.held -= released.len();
                released
            }
            None => Vec::new(),
        }
    }

    /// A trace opened here could not be queued when it ended: what waits for it goes now.
    pub(crate) fn trace_abandoned(&mut self, trace_id: Uuid) -> Vec<J> {
        match self.entries.get(&trace_id) {
            Some(Entry::Open { .. }) => self.trace_dropped(trace_id),
            _ => Vec::new(),
        }
    }

    /// A trace is about to be sent, with the scores made through it.
    pub(crate) fn trace_queued(&mut self, trace_id: Uuid, scores: Vec<J>) {
        self.held += scores.len();
        let entry = self
            .entries
            .entry(trace_id)
            .or_insert(Entry::Sending { held: Vec::new() });
        if let Entry::Open { held, timer } = entry {
            let (held, timer) = (std::mem::take(held), *timer);
            *entry = Entry::Sending { held };
            self.timers.remove(&timer);
        }
        entry.held().extend(scores);
    }

    /// A score: held if its trace is on its way to being stored, else handed back to go now.
    pub(crate) fn admit(&mut self, trace_id: Uuid, job: J) -> Option<J> {
        match self.entries.get_mut(&trace_id) {
            Some(entry) => {
                entry.held().push(job);
                self.held += 1;
                None
            }
            None => Some(job),
        }
    }

    /// The server accepted the trace (202) at `now`.
    pub(crate) fn trace_accepted(&mut self, trace_id: Uuid, spans: usize, now: Instant) {
        let held = match self.entries.remove(&trace_id) {
            Some(Entry::Sending { held }) => held,
            Some(Entry::Open { held, timer }) => {
                self.timers.remove(&timer);
                held
            }
            // Sent again while it was being stored: an upsert, it keeps its place.
            Some(entry @ Entry::Storing { .. }) => {
                self.entries.insert(trace_id, entry);
                return;
            }
            None => Vec::new(),
        };
        let ready_at = now + self.model.cost(spans);
        let stored_at = self.model.predict(now, spans);
        let (order, timer) = (self.seq(), (stored_at, self.seq()));
        self.timers.insert(timer, trace_id);
        self.accepted.insert(order, trace_id);
        self.entries.insert(
            trace_id,
            Entry::Storing {
                held,
                order,
                timer: Some(timer),
                probing: None,
                accepted_at: now,
                ready_at,
                predicted: stored_at,
                spans,
                last_chance_spent: false,
            },
        );
        self.bound_entries();
    }

    /// The trace was dropped (or its scores gave up): its held scores go with it.
    pub(crate) fn trace_dropped(&mut self, trace_id: Uuid) -> Vec<J> {
        match self.remove(trace_id) {
            Some(mut entry) => std::mem::take(entry.held()),
            None => Vec::new(),
        }
    }

    fn remove(&mut self, trace_id: Uuid) -> Option<Entry<J>> {
        let mut entry = self.entries.remove(&trace_id)?;
        match &entry {
            Entry::Storing { order, timer, .. } => {
                self.accepted.remove(order);
                if let Some(timer) = timer {
                    self.timers.remove(timer);
                }
            }
            Entry::Open { timer, .. } => {
                self.timers.remove(timer);
            }
            Entry::Sending { .. } => {}
        }
        self.held -= entry.held().len();
        Some(entry)
    }

    /// Probes whose time has come, an early probe when held scores pile up, and (with no
    /// probe) the scores of traces left open too long.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(J, Option<Probe>)> {
        let mut probes = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let trace_id = entry.remove();
            match self.entries.get_mut(&trace_id) {
                Some(Entry::Storing {
                    held,
                    timer,
                    probing: probing @ None,
                    ..
                }) if !held.is_empty() => {
                    *timer = None;
                    *probing = Some(Probe::Due);
                    self.held -= 1;
                    probes.push((held.remove(0), Some(Probe::Due)));
                }
                Some(Entry::Open { .. }) => {
                    probes.extend(self.trace_dropped(trace_id).into_iter().map(|j| (j, None)));
                }
                // An early probe is out: its answer decides.
                Some(Entry::Storing {
                    timer,
                    probing: Some(_),
                    ..
                }) => *timer = None,
                // Nothing waits for it: it is most likely stored by now; forget it.
                _ => {
                    self.remove(trace_id);
                }
            }
        }
        if let Some((job, probe)) = self.early_probe(now) {
            probes.push((job, Some(probe)));
        }
        probes
    }

    /// The next time [`due`](Self::due) has something to do.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let timer = self.timers.first_key_value().map(|((at, _), _)| *at);
        let early = (self.pressure() && !self.early_probe_out && !self.accepted.is_empty())
            .then(|| self.model.next_early_probe());
        timer.into_iter().chain(early).min()
    }

    /// Every held score (at shutdown).
    pub(crate) fn drain(&mut self) -> Vec<J> {
        let ids: Vec<Uuid> = self.entries.keys().copied().collect();
        ids.into_iter()
            .flat_map(|id| self.trace_dropped(id))
            .collect()
    }
}

#[cfg(test)]
mod tests;
