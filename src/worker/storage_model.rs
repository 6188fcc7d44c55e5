//! When the server will have stored a trace it accepted. It answers 202 at once and stores
//! later: first come first served, two at a time, each trace taking a base time plus a time
//! per span (measured on the real backend: tens of milliseconds for a small trace on an idle
//! server, 4.2 s for 250 spans, 6.4 s for 500, 4.5 s for a small one queued behind big ones).
//! The model replays that queue for the traces this client sent, and learns from what the
//! server answers: a probe that finds its trace not stored slows it down; an early probe that
//! finds the newest trace stored means the server is faster than modelled, and speeds it up.

use std::time::Duration;

use tokio::time::Instant;

/// The server's storage workers (one Celery worker, concurrency 2).
const WORKERS: usize = 2;
/// Per trace and per span, fitted to the slowest of the measurements (so that a probe at the
/// predicted time rarely meets an unstored trace).
const BASE: Duration = Duration::from_millis(30);
const PER_SPAN: Duration = Duration::from_millis(17);
/// How far the learned speed may move from the measured server.
const MIN_SPEED: f64 = 1.0 / 8.0;
const MAX_SPEED: f64 = 256.0;
/// Waits between early probes after one found the server behind.
const FIRST_EARLY_BACKOFF: Duration = Duration::from_secs(1);
const MAX_EARLY_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) struct StorageModel {
    /// When each modelled worker is free.
    free_at: [Instant; WORKERS],
    /// How much faster than the measured server this one stores.
    speed: f64,
    next_early_probe: Instant,
    early_backoff: Duration,
}

impl StorageModel {
    pub(crate) fn new(now: Instant) -> StorageModel {
        StorageModel {
            free_at: [now; WORKERS],
            speed: 1.0,
            next_early_probe: now,
            early_backoff: FIRST_EARLY_BACKOFF,
        }
    }

    /// A trace with `spans` spans was accepted at `accepted_at`: when it will be stored.
    pub(crate) fn predict(&mut self, accepted_at: Instant, spans: usize) -> Instant {
        let cost = (BASE + PER_SPAN * u32::try_from(spans).unwrap_or(u32::MAX)).div_f64(self.speed);
        let (worker, free_at) = self
            .free_at
            .iter_mut()
            .enumerate()
            .min_by_key(|(_, free_at)| **free_at)
            .map(|(i, free_at)| (i, *free_at))
            .unwrap_or((0, accepted_at));
        let stored_at = accepted_at.max(free_at) + cost;
        self.free_at[worker] = stored_at;
        stored_at
    }

    /// A probe at the predicted time found the trace not stored: the server is slower.
    pub(crate) fn behind(&mut self) {
        self.speed = (self.speed / 1.5).max(MIN_SPEED);
    }

    /// An early probe found the newest trace stored: everything sent before it is stored too
    /// (first come first served), and the server is faster than modelled.
    pub(crate) fn caught_up(&mut self, now: Instant) {
        for free_at in &mut self.free_at {
            *free_at = (*free_at).min(now);
        }
        self.speed = (self.speed * 2.0).min(MAX_SPEED);
        self.early_backoff = FIRST_EARLY_BACKOFF;
    }

    /// An early probe found the trace not stored: the model was right; try again later.
    pub(crate) fn early_probe_failed(&mut self, now: Instant) {
        self.next_early_probe = now + self.early_backoff;
        self.early_backoff = (self.early_backoff * 2).min(MAX_EARLY_BACKOFF);
    }

    /// When an early probe may go next.
    pub(crate) fn next_early_probe(&self) -> Instant {
        self.next_early_probe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_small_trace_on_an_idle_server_is_stored_in_tens_of_milliseconds() {
        let t0 = Instant::now();
        let mut m = StorageModel::new(t0);
        assert_eq!(m.predict(t0, 0), t0 + BASE);
        assert_eq!(m.predict(t0 + 1000 * MS, 1), t0 + 1000 * MS + BASE + PER_SPAN);
    }

    #[test]
    fn traces_queue_two_at_a_time_first_come_first_served() {
        let t0 = Instant::now();
        let mut m = StorageModel::new(t0);
        let big = m.predict(t0, 500);
        let medium = m.predict(t0, 250);
        let small = m.predict(t0, 0);
        assert_eq!(big, t0 + BASE + PER_SPAN * 500);
        assert_eq!(medium, t0 + BASE + PER_SPAN * 250);
        assert_eq!(small, medium + BASE, "waits for the first free worker");
        // Not earlier than the real server stored them (6.4 s and 4.2 s); the small one,
        // measured at 4.5 s, may take one more probe.
        assert!(big - t0 >= 6400 * MS && medium - t0 >= 4200 * MS);
    }

    #[test]
    fn it_learns_from_probes() {
        let t0 = Instant::now();
        let mut m = StorageModel::new(t0);
        m.behind();
        assert_eq!(m.predict(t0, 0), t0 + BASE.mul_f64(1.5));
        let mut m = StorageModel::new(t0);
        for _ in 0..10 {
            m.predict(t0, 500);
        }
        m.caught_up(t0 + 10 * MS);
        assert_eq!(m.predict(t0 + 10 * MS, 0), t0 + 10 * MS + BASE / 2);
        m.early_probe_failed(t0);
        assert_eq!(m.next_early_probe(), t0 + FIRST_EARLY_BACKOFF);
        m.early_probe_failed(t0);
        assert_eq!(m.next_early_probe(), t0 + 2 * FIRST_EARLY_BACKOFF);
    }
}
