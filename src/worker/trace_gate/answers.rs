//! What a probe's answer does: stored, the trace's other scores go (and, after an early
//! probe, the model learns the server's pace); not stored, they all wait again.

use tokio::time::Instant;
use uuid::Uuid;

use super::{Entry, Probe, TraceGate, MIN_REPROBE};

impl<J> TraceGate<J> {
    /// The probe found the trace stored: its scores go now. After an early probe, the traces
    /// accepted before it are probed at once too.
    pub(crate) fn probe_delivered(&mut self, trace_id: Uuid, probe: Probe, now: Instant) -> Vec<J> {
        let Some(Entry::Storing {
            order,
            accepted_at,
            predicted,
            ..
        }) = self.entries.get(&trace_id)
        else {
            return self.trace_dropped(trace_id);
        };
        let (order, accepted_at, predicted) = (*order, *accepted_at, *predicted);
        match probe {
            Probe::Due => self.model.on_time(),
            // Shutdown is near: the older traces are stored too (first come first served), but
            // one early answer at the end of a run is no lesson for the model.
            Probe::LastChance => {
                let older: Vec<Uuid> = self.accepted.range(..order).map(|(_, id)| *id).collect();
                for id in older {
                    self.bring_forward(id, now);
                }
            }
            Probe::Early => {
                self.early_probe_out = false;
                self.model.caught_up(
                    now,
                    predicted.saturating_duration_since(accepted_at),
                    now.saturating_duration_since(accepted_at),
                );
                let older: Vec<Uuid> = self.accepted.range(..order).map(|(_, id)| *id).collect();
                for id in older {
                    self.retime(id, now);
                }
                // Those accepted since were timed by the slower model: timed again by the
                // faster one, queued from now in the order they were accepted.
                let newer: Vec<Uuid> = self
                    .accepted
                    .range(order + 1..)
                    .map(|(_, id)| *id)
                    .collect();
                for id in newer {
                    if let Some(Entry::Storing { spans, .. }) = self.entries.get(&id) {
                        let at = self.model.predict(now, *spans);
                        self.bring_forward(id, at);
                    }
                }
            }
        }
        self.trace_dropped(trace_id)
    }

    /// The probe found the trace not stored yet: `job` waits again with its siblings.
    pub(crate) fn probe_not_stored(&mut self, trace_id: Uuid, job: J, probe: Probe, now: Instant) {
        match probe {
            Probe::Early => {
                self.early_probe_out = false;
                self.model.early_probe_failed(now);
            }
            Probe::Due => self.model.behind(),
            Probe::LastChance => {}
        }
        let Some(Entry::Storing {
            held,
            order,
            timer,
            probing,
            accepted_at,
            ..
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
            return; // an early or last-chance probe: its predicted time still stands
        }
        // Wait as long again as it has waited so far: a few probes cover any lag.
        let wait = now.saturating_duration_since(*accepted_at).max(MIN_REPROBE);
        let order = *order;
        let key = (now + wait, self.next_seq + 1);
        self.next_seq += 1;
        *timer = Some(key);
        self.timers.insert(key, trace_id);
        // Traces accepted after it cannot be stored before it is: push their probes back.
        let later: Vec<Uuid> = self
            .accepted
            .range(order + 1..)
            .map(|(_, id)| *id)
            .collect();
        for id in later {
            self.postpone(id, key.0);
        }
    }
}
