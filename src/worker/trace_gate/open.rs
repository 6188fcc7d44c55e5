//! Traces still open in this process: scores made for them (with `client.score` and the id)
//! wait for them to end, at most a while, and those of the trace open longest go first when
//! the room for waiting scores runs out. Open traces that hold nothing are bounded.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::{Entry, TraceGate};

impl<J> TraceGate<J> {
    /// A trace was opened in this process: scores for it wait until it has ended and is
    /// stored, or until `hold_open` has passed.
    pub(crate) fn trace_opened(&mut self, trace_id: Uuid, hold_open: Duration, now: Instant) {
        if self.entries.contains_key(&trace_id) {
            return;
        }
        let timer = (now + hold_open, self.seq());
        self.open_timers.insert(timer, trace_id);
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
        let oldest_open = self.open_timers.values().copied().find(
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

    /// Scores of traces left open too long: they go now.
    pub(crate) fn due_open(&mut self, now: Instant) -> Vec<J> {
        let mut released = Vec::new();
        while let Some(entry) = self.open_timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let trace_id = entry.remove();
            if let Some(Entry::Open { .. }) = self.entries.get(&trace_id) {
                released.extend(self.trace_dropped(trace_id));
            }
        }
        released
    }

    /// Forgets the open traces that hold nothing, oldest first, beyond `max_entries`. Entries
    /// that hold jobs are bounded by `capacity` already, and those being sent by the worker's
    /// window.
    fn bound_entries(&mut self) {
        self.bound_idle();
        if self.entries.len() <= self.max_entries {
            return;
        }
        // A quarter at once, so that the walk is paid rarely.
        let excess = self.entries.len() - self.max_entries + self.max_entries / 4;
        let idle: Vec<Uuid> = self
            .open_timers
            .values()
            .copied()
            .filter(|id| matches!(self.entries.get(id), Some(Entry::Open { held, .. }) if held.is_empty()))
            .take(excess)
            .collect();
        for id in idle {
            self.trace_dropped(id);
        }
    }
}
