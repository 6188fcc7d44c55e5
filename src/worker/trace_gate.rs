//! Scores held for their trace. The server refuses (500) a score whose trace it has not stored
//! yet, and stores traces a while after accepting them. So a score for a trace this client
//! sent waits here, outside the requests being sent, until the trace can be stored: then one
//! score goes as a probe. If it is delivered, the trace's other scores follow at once; if the
//! server answers 500 (not stored yet), they all wait on, and the model learns the server is
//! slower. One probe per trace, not one failure per score.
//!
//! When held scores pile up (a quarter of the room), the newest trace is probed before its
//! predicted time: if it is stored, so is everything sent before it (first come first served),
//! and the model learns the server is faster. Memory: at most `capacity` held scores, and at
//! most `max_entries` traces remembered without held scores.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::storage_model::StorageModel;

/// The least wait before probing a trace again after it was found not stored.
const MIN_REPROBE: Duration = Duration::from_millis(50);

/// Why a probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// At the time the model predicted.
    Due,
    /// Before it, because held scores pile up.
    Early,
}

enum Entry<J> {
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
        failed_probes: u32,
    },
}

impl<J> Entry<J> {
    fn held(&mut self) -> &mut Vec<J> {
        match self {
            Entry::Sending { held } | Entry::Storing { held, .. } => held,
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
    early_probe_out: bool,
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
            early_probe_out: false,
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

    /// A trace is about to be sent, with the scores made through it.
    pub(crate) fn trace_queued(&mut self, trace_id: Uuid, scores: Vec<J>) {
        self.held += scores.len();
        self.entries
            .entry(trace_id)
            .or_insert(Entry::Sending { held: Vec::new() })
            .held()
            .extend(scores);
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
        let stored_at = self.model.predict(now, spans);
        let (order, timer) = (self.seq(), (stored_at, self.seq()));
        let held = match self.entries.remove(&trace_id) {
            Some(Entry::Sending { held }) => held,
            // Sent again while it was being stored: an upsert, it keeps its place.
            Some(entry @ Entry::Storing { .. }) => {
                self.entries.insert(trace_id, entry);
                return;
            }
            None => Vec::new(),
        };
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
                failed_probes: 0,
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
        if let Entry::Storing { order, timer, .. } = &entry {
            self.accepted.remove(order);
            if let Some(timer) = timer {
                self.timers.remove(timer);
            }
        }
        self.held -= entry.held().len();
        Some(entry)
    }

    /// Probes whose time has come, and an early probe when held scores pile up.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(J, Probe)> {
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
                    probes.push((held.remove(0), Probe::Due));
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
        if let Some(probe) = self.early_probe(now) {
            probes.push(probe);
        }
        probes
    }

    fn pressure(&self) -> bool {
        self.held >= (self.capacity / 4).max(1)
    }

    /// The newest accepted trace with held scores, probed before its time.
    fn early_probe(&mut self, now: Instant) -> Option<(J, Probe)> {
        if self.early_probe_out || !self.pressure() || now < self.model.next_early_probe() {
            return None;
        }
        let newest = self.accepted.values().rev().find(|id| {
            matches!(self.entries.get(id), Some(Entry::Storing { held, probing: None, .. }) if !held.is_empty())
        });
        let trace_id = *newest?;
        let Some(Entry::Storing { held, probing, .. }) = self.entries.get_mut(&trace_id) else {
            return None;
        };
        *probing = Some(Probe::Early);
        self.early_probe_out = true;
        self.held -= 1;
        Some((held.remove(0), Probe::Early))
    }

    /// The probe found the trace stored: its scores go now. After an early probe, the traces
    /// accepted before it are probed at once too.
    pub(crate) fn probe_delivered(&mut self, trace_id: Uuid, probe: Probe, now: Instant) -> Vec<J> {
        let order = match self.entries.get(&trace_id) {
            Some(Entry::Storing { order, .. }) => Some(*order),
            _ => None,
        };
        if probe == Probe::Early {
            self.early_probe_out = false;
            self.model.caught_up(now);
            if let Some(order) = order {
                let older: Vec<Uuid> = self.accepted.range(..order).map(|(_, id)| *id).collect();
                for id in older {
                    self.retime(id, now);
                }
            }
        }
        self.trace_dropped(trace_id)
    }

    /// The probe found the trace not stored yet: `job` waits again with its siblings.
    pub(crate) fn probe_not_stored(&mut self, trace_id: Uuid, job: J, probe: Probe, now: Instant) {
        if probe == Probe::Early {
            self.early_probe_out = false;
            self.model.early_probe_failed(now);
        } else {
            self.model.behind();
        }
        let Some(Entry::Storing {
            held,
            order,
            timer,
            probing,
            accepted_at,
            failed_probes,
        }) = self.entries.get_mut(&trace_id)
        else {
            // Forgotten meanwhile: keep the score anyway, as a trace just accepted.
            self.entries
                .insert(trace_id, Entry::Sending { held: vec![job] });
            self.held += 1;
            self.trace_accepted(trace_id, 0, now);
            return;
        };
        held.insert(0, job);
        self.held += 1;
        *probing = None;
        if timer.is_some() {
            return; // an early probe: its predicted time still stands
        }
        *failed_probes += 1;
        // An eighth of the time waited so far, doubling with each miss.
        let waited = now.saturating_duration_since(*accepted_at);
        let wait = (waited / 8).max(MIN_REPROBE) * (1 << (*failed_probes - 1).min(6));
        let order = *order;
        let key = (now + wait, self.next_seq + 1);
        self.next_seq += 1;
        *timer = Some(key);
        self.timers.insert(key, trace_id);
        // Traces accepted after it cannot be stored before it is: push their probes back.
        let later: Vec<Uuid> = self.accepted.range(order + 1..).map(|(_, id)| *id).collect();
        for id in later {
            self.postpone(id, key.0);
        }
    }

    /// Moves a waiting trace's probe to `at`.
    fn retime(&mut self, trace_id: Uuid, at: Instant) {
        let seq = self.seq();
        if let Some(Entry::Storing {
            timer: Some(key), ..
        }) = self.entries.get_mut(&trace_id)
        {
            self.timers.remove(key);
            *key = (at, seq);
            self.timers.insert(*key, trace_id);
        }
    }

    /// Moves a waiting trace's probe to no earlier than `at`.
    fn postpone(&mut self, trace_id: Uuid, at: Instant) {
        let due = match self.entries.get(&trace_id) {
            Some(Entry::Storing {
                timer: Some((due, _)),
                ..
            }) => *due,
            _ => return,
        };
        if due < at {
            self.retime(trace_id, at);
        }
    }

    /// The next time [`due`](Self::due) has something to do.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let timer = self.timers.first_key_value().map(|((at, _), _)| *at);
        let early = (self.pressure() && !self.early_probe_out && !self.accepted.is_empty())
            .then(|| self.model.next_early_probe());
        timer.into_iter().chain(early).min()
    }

    /// Forgets the traces due soonest that hold no scores, beyond `max_entries`.
    fn bound_entries(&mut self) {
        if self.entries.len() <= self.max_entries {
            return;
        }
        let idle: Vec<Uuid> = self
            .timers
            .values()
            .copied()
            .filter(|id| matches!(self.entries.get(id), Some(Entry::Storing { held, .. }) if held.is_empty()))
            .take(self.entries.len() - self.max_entries)
            .collect();
        for id in idle {
            self.remove(id);
        }
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
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn gate(capacity: usize) -> (TraceGate<u32>, Instant) {
        let now = Instant::now();
        (TraceGate::new(capacity, now), now)
    }

    #[test]
    fn scores_of_other_traces_go_at_once_and_held_ones_wait_for_the_trace() {
        let (mut g, t0) = gate(100);
        let (a, other) = (Uuid::new_v4(), Uuid::new_v4());
        g.trace_queued(a, vec![1, 2]);
        assert_eq!(g.admit(other, 9), Some(9));
        assert_eq!(g.admit(a, 3), None);
        assert_eq!(g.held(), 3);
        assert!(g.due(t0 + 10_000 * MS).is_empty(), "not accepted yet");
        g.trace_accepted(a, 0, t0);
        let due = g.next_due().expect("a probe time");
        assert!(due > t0 && due <= t0 + 50 * MS, "{:?}", due - t0);
        assert!(g.due(due - MS).is_empty());
        assert_eq!(g.due(due), [(1, Probe::Due)], "one probe");
        assert_eq!(g.admit(a, 4), None, "still held while the probe is out");
        assert_eq!(g.probe_delivered(a, Probe::Due, due + MS), [2, 3, 4]);
        assert_eq!(g.held(), 0);
        assert_eq!(g.admit(a, 5), Some(5), "a stored trace holds nothing");
    }

    #[test]
    fn a_trace_found_not_stored_holds_its_scores_and_delays_later_traces() {
        let (mut g, t0) = gate(100);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        g.trace_queued(a, vec![1, 2, 3]);
        g.trace_queued(b, vec![4]);
        g.trace_queued(c, vec![5]);
        for id in [a, b, c] {
            g.trace_accepted(id, 0, t0);
        }
        let first = g.next_due().expect("due");
        assert_eq!(g.due(first), [(1, Probe::Due), (4, Probe::Due)], "two at a time");
        g.probe_not_stored(a, 1, Probe::Due, first);
        assert_eq!(g.held(), 4, "nothing was lost or sent");
        let again = g.next_due().expect("due");
        assert_eq!(again, first + MIN_REPROBE);
        assert!(
            g.due(again - MS).is_empty(),
            "c, queued behind a, was pushed back with it"
        );
        assert_eq!(g.due(again), [(1, Probe::Due), (5, Probe::Due)]);
        assert_eq!(g.probe_delivered(a, Probe::Due, again), [2, 3]);
    }

    #[test]
    fn a_dropped_trace_takes_its_scores_and_a_forgotten_one_holds_nothing() {
        let (mut g, t0) = gate(100);
        let a = Uuid::new_v4();
        g.trace_queued(a, vec![1]);
        assert_eq!(g.admit(a, 2), None);
        assert_eq!(g.trace_dropped(a), [1, 2]);
        assert_eq!(g.held(), 0);
        let b = Uuid::new_v4();
        g.trace_queued(b, vec![]);
        g.trace_accepted(b, 0, t0);
        assert!(g.due(t0 + 10 * 1000 * MS).is_empty());
        assert_eq!(g.admit(b, 3), Some(3), "its time passed: probably stored");
    }

    #[test]
    fn piling_up_probes_the_newest_early_and_success_releases_the_older() {
        let (mut g, t0) = gate(8);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate() {
            g.trace_queued(*id, vec![i as u32 * 10, i as u32 * 10 + 1]);
            g.trace_accepted(*id, 500, t0); // modelled to take seconds each
        }
        assert_eq!(g.next_due(), Some(t0), "pressure: an early probe may go now");
        assert_eq!(g.due(t0), [(30, Probe::Early)], "the newest");
        assert_eq!(g.probe_delivered(ids[3], Probe::Early, t0 + MS), [31]);
        let probes = g.due(t0 + MS);
        assert_eq!(
            probes.iter().map(|(j, _)| *j).collect::<Vec<_>>(),
            [0, 10, 20],
            "the older ones are probed at once"
        );
    }

    #[test]
    fn a_failed_early_probe_backs_off_and_keeps_the_predicted_time() {
        let (mut g, t0) = gate(4);
        let a = Uuid::new_v4();
        g.trace_queued(a, vec![1, 2]);
        g.trace_accepted(a, 500, t0);
        let predicted = g.timers.first_key_value().map(|(k, _)| k.0);
        assert_eq!(g.due(t0), [(1, Probe::Early)]);
        assert!(g.due(t0).is_empty(), "one early probe at a time");
        g.probe_not_stored(a, 1, Probe::Early, t0 + MS);
        assert_eq!(g.timers.first_key_value().map(|(k, _)| k.0), predicted);
        assert_eq!(g.next_due(), Some(t0 + MS + Duration::from_secs(1)));
    }

    #[test]
    fn memory_is_bounded() {
        let (mut g, t0) = gate(2);
        g.trace_queued(Uuid::new_v4(), vec![1, 2]);
        assert!(g.is_full());
        for i in 0..5000 {
            let id = Uuid::new_v4();
            g.trace_queued(id, vec![]);
            g.trace_accepted(id, 0, t0 + MS * i);
        }
        assert!(g.remembered() <= 1024 + 1, "{}", g.remembered());
        assert_eq!(g.drain().len(), 2);
        assert_eq!(g.held(), 0);
    }
}
