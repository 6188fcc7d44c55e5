//! Moving probe times, and the bound on how many traces are remembered.

use tokio::time::Instant;
use uuid::Uuid;

use super::{Entry, TraceGate};

impl<J> TraceGate<J> {
    /// Moves a waiting trace's probe to `at`.
    pub(super) fn retime(&mut self, trace_id: Uuid, at: Instant) {
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

    /// Moves a waiting trace's probe to no later than `at`.
    pub(super) fn bring_forward(&mut self, trace_id: Uuid, at: Instant) {
        let due = match self.entries.get(&trace_id) {
            Some(Entry::Storing {
                timer: Some((due, _)),
                ..
            }) => *due,
            _ => return,
        };
        if due > at {
            self.retime(trace_id, at);
        }
    }

    /// Moves a waiting trace's probe to no earlier than `at`.
    pub(super) fn postpone(&mut self, trace_id: Uuid, at: Instant) {
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

    /// Forgets the traces due soonest that hold no scores, beyond `max_entries`. Entries that
    /// hold scores are bounded by `capacity` already.
    pub(super) fn bound_entries(&mut self) {
        if self.entries.len() <= self.next_bound_check {
            return;
        }
        let excess = self.entries.len().saturating_sub(self.max_entries);
        let idle: Vec<Uuid> = self
            .timers
            .values()
            .copied()
            .filter(|id| {
                matches!(
                    self.entries.get(id),
                    Some(Entry::Storing { held, .. } | Entry::Open { held, .. }) if held.is_empty()
                )
            })
            .take(excess)
            .collect();
        for id in idle {
            self.remove(id);
        }
        // Check again only after a quarter more entries: a pass costs one walk of the timers.
        self.next_bound_check = self.entries.len().max(self.max_entries) + self.max_entries / 4;
    }
}
