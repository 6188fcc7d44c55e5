//! When the server will have stored a trace it accepted. It answers 202 at once and stores
//! later: first come first served, two at a time, each trace taking a base time plus a time
//! per span (measured on the real backend: 30-110 ms for a small trace on an idle server,
//! 4.2 s for 250 spans, 6.4 s for 500, 4.5 s for a small one queued behind big ones).
//! The model replays that queue for the traces this client sent, and learns from what the
//! server answers: a probe that finds its trace not stored slows it down; an early probe that
//! finds the newest trace stored means the server is faster than modelled, and speeds it up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

/// The measured server's storage workers (one Celery worker, concurrency 2); a faster server is
/// modelled with more, learned from early probes, up to `MAX_WORKERS`.
const MEASURED_WORKERS: usize = 2;
const MAX_WORKERS: usize = 1024;
/// Per trace and per span, fitted to the slowest of the measurements (so that a probe at the
/// predicted time rarely meets an unstored trace): the backend on a 2-core machine took 90-110
/// ms to store a trace of one span on an idle worker, 17 ms a span at worst.
pub(crate) const BASE: Duration = Duration::from_millis(120);
const PER_SPAN: Duration = Duration::from_millis(17);
/// How much slower than measured a trace may be modelled after misses.
const MIN_SPEED: f64 = 1.0 / 8.0;
/// Waits between early probes after one found the server behind.
const FIRST_EARLY_BACKOFF: Duration = Duration::from_secs(1);
const MAX_EARLY_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct StorageModel {
    /// When each modelled worker is free, earliest first.
    free_at: BinaryHeap<Reverse<Instant>>,
    workers: usize,
    /// How much faster than measured one trace is stored: at most 1 (only the parallelism is
    /// learned upwards; a single trace is never assumed faster than measured).
    speed: f64,
    next_early_probe: Instant,
    early_backoff: Duration,
}

impl StorageModel {
    pub(crate) fn new(now: Instant) -> StorageModel {
        StorageModel {
            free_at: std::iter::repeat_n(Reverse(now), MEASURED_WORKERS).collect(),
            workers: MEASURED_WORKERS,
            speed: 1.0,
            next_early_probe: now,
            early_backoff: FIRST_EARLY_BACKOFF,
        }
    }

    /// How long storing a trace of `spans` spans takes, once a worker has it.
    pub(crate) fn cost(&self, spans: usize) -> Duration {
        (BASE + PER_SPAN * u32::try_from(spans).unwrap_or(u32::MAX)).div_f64(self.speed)
    }

    /// A trace with `spans` spans was accepted at `accepted_at`: when it will be stored.
    pub(crate) fn predict(&mut self, accepted_at: Instant, spans: usize) -> Instant {
        let free_at = self.free_at.pop().map_or(accepted_at, |Reverse(t)| t);
        let stored_at = accepted_at.max(free_at) + self.cost(spans);
        self.free_at.push(Reverse(stored_at));
        stored_at
    }

    /// A probe at the predicted time found the trace not stored: the server is slower, or
    /// less parallel, than modelled. Parallelism learned earlier is given back first.
    pub(crate) fn behind(&mut self) {
        if self.workers > MEASURED_WORKERS {
            self.workers = (self.workers / 2).max(MEASURED_WORKERS);
            // Keep the workers busy longest: the slower assumption.
            let mut times: Vec<Instant> = self.free_at.drain().map(|Reverse(t)| t).collect();
            times.sort_unstable();
            let keep = times.split_off(times.len().saturating_sub(self.workers));
            self.free_at = keep.into_iter().map(Reverse).collect();
        } else {
            self.speed = (self.speed / 1.5).max(MIN_SPEED);
        }
    }

    /// A probe at the predicted time found the trace stored: after being slowed down, the
    /// model recovers towards the measured speed (never beyond it).
    pub(crate) fn on_time(&mut self) {
        self.speed = (self.speed * 1.05).min(1.0);
    }

    /// An early probe found the newest trace stored at `now` although the model had it stored
    /// at `predicted`, `waited` after it was accepted: everything sent before it is stored too
    /// (first come first served), and the server stores more traces at once than modelled, by
    /// at least `predicted / waited`.
    pub(crate) fn caught_up(&mut self, now: Instant, predicted: Duration, waited: Duration) {
        let evidence = predicted.as_secs_f64() / waited.as_secs_f64().max(0.001);
        let workers = (self.workers as f64 * evidence.max(2.0)).min(MAX_WORKERS as f64);
        self.workers = (workers as usize).max(self.workers);
        self.free_at = std::iter::repeat_n(Reverse(now), self.workers).collect();
        self.early_backoff = FIRST_EARLY_BACKOFF;
    }

    /// An early probe found the trace not stored: the model was right; try again later.
    pub(crate) fn early_probe_failed(&mut self, now: Instant) {
        self.next_early_probe = now + self.early_backoff;
        self.early_backoff = (self.early_backoff * 2).min(MAX_EARLY_BACKOFF);
    }

    /// No early probe before `at`.
    pub(crate) fn defer_early_probe(&mut self, at: Instant) {
        self.next_early_probe = self.next_early_probe.max(at);
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
        assert_eq!(
            m.predict(t0 + 1000 * MS, 1),
            t0 + 1000 * MS + BASE + PER_SPAN
        );
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
    fn misses_slow_it_down_and_successes_bring_it_back_to_the_measured_speed() {
        let t0 = Instant::now();
        let mut m = StorageModel::new(t0);
        m.behind();
        assert_eq!(m.predict(t0, 0), t0 + BASE.mul_f64(1.5));
        m.on_time();
        assert_eq!(m.cost(0), BASE.mul_f64(1.5 / 1.05));
        for _ in 0..20 {
            m.on_time();
        }
        assert_eq!(m.cost(0), BASE, "back to the measured speed, not beyond");
    }

    #[test]
    fn an_early_probe_shows_more_parallelism_and_a_miss_gives_it_back() {
        let t0 = Instant::now();
        let mut m = StorageModel::new(t0);
        let backlog = (0..100).map(|_| m.predict(t0, 0)).max().expect("predicted");
        assert_eq!(backlog, t0 + BASE * 50, "two at a time");
        // The newest was stored a thirtieth of the modelled time in: 30 times as many workers.
        let stored = BASE * 50 / 30;
        m.caught_up(t0 + stored, backlog - t0, stored);
        assert_eq!(m.workers, 60);
        let later = (0..60).map(|_| m.predict(t0 + stored, 0)).max();
        assert_eq!(
            later,
            Some(t0 + stored + BASE),
            "sixty at once, none faster"
        );
        m.behind();
        assert_eq!((m.workers, m.cost(0)), (30, BASE), "parallelism goes first");
        m.early_probe_failed(t0);
        assert_eq!(m.next_early_probe(), t0 + FIRST_EARLY_BACKOFF);
        m.early_probe_failed(t0);
        assert_eq!(m.next_early_probe(), t0 + 2 * FIRST_EARLY_BACKOFF);
    }
}
