//! Probing before the predicted time. When held scores pile up: the newest trace holding
//! scores, once its own storing time has passed; if it is stored, everything sent before it is
//! too (first come first served), and the model learns the server stores more at once. Near
//! shutdown's deadline: one last chance for every trace the model has stored only after it.

use tokio::time::Instant;
use uuid::Uuid;

use super::{Entry, Probe, TraceGate, EARLY_LOOK, NEWEST_LOOKED_AT};

impl<J> TraceGate<J> {
    pub(super) fn pressure(&self) -> bool {
        self.held >= (self.capacity / 8).max(1)
    }

    /// The newest accepted trace holding scores, probed before its predicted time, once the
    /// server can have stored it if it kept up (its own storing time has passed).
    pub(super) fn early_probe(&mut self, now: Instant) -> Option<(J, Probe)> {
        if self.early_probe_out || !self.pressure() || now < self.model.next_early_probe() {
            return None;
        }
        let target = match self.early_target.filter(|id| self.unprobed(id).is_some()) {
            Some(id) => id,
            None => {
                let Some(id) = self.newest_unprobed() else {
                    self.model.defer_early_probe(now + EARLY_LOOK);
                    return None;
                };
                self.early_target = Some(id);
                id
            }
        };
        let ready_at = self.unprobed(&target)?;
        if ready_at > now {
            self.model.defer_early_probe(ready_at);
            return None;
        }
        self.early_target = None;
        let Some(Entry::Storing { held, probing, .. }) = self.entries.get_mut(&target) else {
            return None;
        };
        *probing = Some(Probe::Early);
        self.early_probe_out = true;
        self.held -= 1;
        Some((held.remove(0), Probe::Early))
    }

    /// When a trace holding scores with no probe out can have been stored at the earliest.
    fn unprobed(&self, trace_id: &Uuid) -> Option<Instant> {
        match self.entries.get(trace_id) {
            Some(Entry::Storing {
                held,
                probing: None,
                ready_at,
                ..
            }) if !held.is_empty() => Some(*ready_at),
            _ => None,
        }
    }

    /// The newest accepted trace holding scores with no probe out, among the last few.
    fn newest_unprobed(&self) -> Option<Uuid> {
        self.accepted
            .values()
            .rev()
            .take(NEWEST_LOOKED_AT)
            .find(|id| self.unprobed(id).is_some())
            .copied()
    }

    /// One probe for each trace whose scores would wait past `deadline` (shutdown's): the
    /// model may be slower than the server, and waiting means losing them for sure.
    pub(crate) fn last_chance(&mut self, deadline: Instant) -> Vec<(J, Probe)> {
        let after: Vec<Uuid> = self
            .timers
            .range((deadline, u64::MAX)..)
            .map(|(_, id)| *id)
            .collect();
        let mut probes = Vec::new();
        for id in after {
            if let Some(Entry::Storing {
                held,
                probing: probing @ None,
                last_chance_spent: spent @ false,
                ..
            }) = self.entries.get_mut(&id)
            {
                if !held.is_empty() {
                    *probing = Some(Probe::LastChance);
                    *spent = true;
                    probes.push((held.remove(0), Probe::LastChance));
                }
            }
        }
        self.held -= probes.len();
        probes
    }
}
