//! Traces whose root span is still open, so that one never closed (leaked, forgotten, held by
//! a task that never ends) is still sent, and its data freed, once it is too old.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::trace::Trace;

/// The open traces of one layer. Checked when a root opens, never by a timer: the layer has no
/// thread of its own.
pub(super) struct OpenRoots {
    max_age: Duration,
    open: HashMap<Uuid, (Instant, Trace)>,
    /// When the oldest open trace becomes too old; `None` when none will.
    next_expiry: Option<Instant>,
}

impl OpenRoots {
    pub(super) fn new(max_age: Duration) -> OpenRoots {
        OpenRoots {
            max_age,
            open: HashMap::new(),
            next_expiry: None,
        }
    }

    /// Tracks a trace opened at `now`; returns the traces that are too old, for the caller to
    /// end outside its lock.
    pub(super) fn opened(&mut self, trace: &Trace, now: Instant) -> Vec<Trace> {
        let expired = self.take_expired(now);
        self.open.insert(trace.trace_id(), (now, trace.clone()));
        if self.next_expiry.is_none() {
            self.next_expiry = now.checked_add(self.max_age);
        }
        expired
    }

    /// The trace's root span closed.
    pub(super) fn closed(&mut self, trace_id: Uuid) {
        self.open.remove(&trace_id);
    }

    /// Scans only when the oldest trace is due, so that opening a root costs O(1) otherwise.
    fn take_expired(&mut self, now: Instant) -> Vec<Trace> {
        if self.next_expiry.is_none_or(|at| now < at) {
            return Vec::new();
        }
        let max_age = self.max_age;
        let expired_ids: Vec<Uuid> = self
            .open
            .iter()
            .filter(|(_, (opened, _))| now.saturating_duration_since(*opened) >= max_age)
            .map(|(id, _)| *id)
            .collect();
        let expired = expired_ids
            .iter()
            .filter_map(|id| self.open.remove(id))
            .map(|(_, trace)| trace)
            .collect();
        self.next_expiry = self
            .open
            .values()
            .map(|(opened, _)| *opened)
            .min()
            .and_then(|oldest| oldest.checked_add(max_age));
        expired
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;

    const AGE: Duration = Duration::from_secs(60);

    fn ids(traces: &[Trace]) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = traces.iter().map(Trace::trace_id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn closed_traces_are_forgotten() {
        let client = Client::disabled();
        let mut roots = OpenRoots::new(AGE);
        let t0 = Instant::now();
        let trace = client.start_trace("a");
        assert!(roots.opened(&trace, t0).is_empty());
        roots.closed(trace.trace_id());
        assert_eq!(roots.len(), 0);
        assert!(roots
            .opened(&client.start_trace("b"), t0 + 2 * AGE)
            .is_empty());
    }

    #[test]
    fn traces_open_too_long_are_handed_back_when_the_next_root_opens() {
        let client = Client::disabled();
        let mut roots = OpenRoots::new(AGE);
        let t0 = Instant::now();
        let (old, older) = (client.start_trace("old"), client.start_trace("older"));
        assert!(roots.opened(&older, t0).is_empty());
        assert!(roots.opened(&old, t0 + Duration::from_secs(30)).is_empty());
        // Neither is due a second before the first expiry.
        let young = client.start_trace("young");
        assert!(roots
            .opened(&young, t0 + AGE - Duration::from_secs(1))
            .is_empty());

        let expired = roots.opened(&client.start_trace("next"), t0 + AGE);
        assert_eq!(ids(&expired), vec![older.trace_id()]);
        let expired = roots.opened(
            &client.start_trace("later"),
            t0 + AGE + Duration::from_secs(30),
        );
        assert_eq!(ids(&expired), vec![old.trace_id()]);
        assert_eq!(roots.len(), 3);
    }

    #[test]
    fn an_unbounded_age_never_expires() {
        let client = Client::disabled();
        let mut roots = OpenRoots::new(Duration::MAX);
        let t0 = Instant::now();
        assert!(roots.opened(&client.start_trace("a"), t0).is_empty());
        let far = t0 + Duration::from_secs(10 * 365 * 24 * 3600);
        assert!(roots.opened(&client.start_trace("b"), far).is_empty());
        assert_eq!(roots.len(), 2);
    }
}
