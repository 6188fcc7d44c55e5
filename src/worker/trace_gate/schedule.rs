//! When to ask the server again whether one accepted trace is stored yet.
//!
//! No model of the server's speed: a small trace is stored within tens of milliseconds on an
//! idle server and within seconds or minutes on a loaded one, and the only one who knows is the
//! server. So the asking starts soon after the 202 and is frequent while a quick answer is
//! likely, then slows down, within what the server allows: each trace id's readiness path has
//! its own 200 requests a minute (the limiter keys by concrete path), and this schedule sends
//! at most about 170 in a trace's first minute and 30 a minute after.

use std::time::Duration;

use tokio::time::Instant;

/// The first question, this long after the 202: the fastest server seen stores a small trace
/// in about 50 ms, so an earlier one would be wasted.
pub(super) const FIRST_PROBE: Duration = Duration::from_millis(20);
/// The least and the most time between two questions in a trace's first seconds: a quarter of
/// what it has waited so far, between these.
const QUICK_MIN: Duration = Duration::from_millis(20);
const QUICK_MAX: Duration = Duration::from_millis(100);
/// How long a trace is asked about at the quick pace.
const QUICK_PHASE: Duration = Duration::from_secs(8);
/// The pace after that, within the first minute, and after the first minute.
const SLOW_GAP: Duration = Duration::from_millis(600);
const SLOWEST_GAP: Duration = Duration::from_secs(2);
const MINUTE: Duration = Duration::from_secs(60);

/// The time between two questions, by how long the trace has waited since its 202.
pub(super) fn gap(waited: Duration) -> Duration {
    if waited < QUICK_PHASE {
        (waited / 4).clamp(QUICK_MIN, QUICK_MAX)
    } else if waited < MINUTE {
        SLOW_GAP
    } else {
        SLOWEST_GAP
    }
}

/// One trace's questions: when the next may go, and whether one is out.
#[derive(Debug, Clone)]
pub(super) struct ProbeSchedule {
    accepted_at: Instant,
    next_at: Instant,
    /// The end of a rate-limit pause: nothing goes before it.
    not_before: Instant,
    out: bool,
    answers: u32,
}

impl ProbeSchedule {
    /// A trace the server accepted at `accepted_at`.
    pub(super) fn new(accepted_at: Instant) -> ProbeSchedule {
        ProbeSchedule {
            accepted_at,
            next_at: accepted_at + FIRST_PROBE,
            not_before: accepted_at,
            out: false,
            answers: 0,
        }
    }

    /// When the next question may go; `None` while one is out.
    pub(super) fn next_at(&self) -> Option<Instant> {
        (!self.out).then_some(self.next_at)
    }

    pub(super) fn is_due(&self, now: Instant) -> bool {
        !self.out && now >= self.next_at
    }

    /// A question went.
    pub(super) fn sent(&mut self) {
        self.out = true;
    }

    /// The answer said "not stored yet", or said nothing (a failure, a 5xx): ask again after
    /// the gap.
    pub(super) fn not_yet(&mut self, now: Instant) {
        self.out = false;
        self.answers += 1;
        self.next_at = now + gap(now.saturating_duration_since(self.accepted_at));
    }

    /// The path's rate limit was reached: ask again after `wait`, and never sooner than the gap.
    pub(super) fn paused(&mut self, now: Instant, wait: Duration) {
        self.not_yet(now);
        self.not_before = now + wait;
        self.next_at = self.next_at.max(self.not_before);
    }

    /// A trace accepted after this one is stored, so this one likely is too: ask now (unless
    /// the rate limit said to wait).
    pub(super) fn hurry(&mut self, now: Instant) {
        self.next_at = self.next_at.min(now).max(self.not_before);
    }

    /// How many answers said "not yet" so far.
    pub(super) fn answers(&self) -> u32 {
        self.answers
    }

    /// How long since the server accepted the trace.
    pub(super) fn waited(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.accepted_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The times of every question to a trace never stored, answered at once, until `end`.
    fn questions(end: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut s = ProbeSchedule::new(t0);
        let mut times = Vec::new();
        while let Some(at) = s.next_at() {
            if at - t0 > end {
                break;
            }
            assert!(s.is_due(at) && !s.is_due(at - MS));
            s.sent();
            assert_eq!(s.next_at(), None, "one question out at a time");
            times.push(at - t0);
            s.not_yet(at);
        }
        times
    }

    #[test]
    fn questions_start_soon_and_are_never_more_than_100ms_apart_at_first() {
        let times = questions(QUICK_PHASE);
        assert_eq!(times[0], FIRST_PROBE);
        assert_eq!(times[1] - times[0], QUICK_MIN);
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] <= QUICK_MAX, "{pair:?}");
        }
        assert!(times.iter().any(|t| *t < 100 * MS && *t > 50 * MS));
    }

    #[test]
    fn every_minute_stays_under_the_paths_200_requests() {
        let times = questions(10 * MINUTE);
        let first_minute = times.iter().filter(|t| **t < MINUTE).count();
        assert!(first_minute <= 180, "{first_minute} in the first minute");
        for start in (0..600).map(Duration::from_secs) {
            let in_window = times
                .iter()
                .filter(|t| **t >= start && **t < start + MINUTE)
                .count();
            assert!(in_window < 200, "{in_window} from {start:?}");
        }
        let last_minute = times.iter().filter(|t| **t >= 9 * MINUTE).count();
        assert_eq!(last_minute, 30, "every 2 s after the first minute");
    }

    #[test]
    fn a_pause_waits_at_least_as_long_as_asked_and_hurry_brings_it_to_now() {
        let t0 = Instant::now();
        let mut s = ProbeSchedule::new(t0);
        s.sent();
        s.hurry(t0);
        assert_eq!(s.next_at(), None, "hurry does not send a second question");
        s.paused(t0 + 30 * MS, Duration::from_secs(5));
        assert_eq!(s.next_at(), Some(t0 + 30 * MS + Duration::from_secs(5)));
        s.hurry(t0 + 100 * MS);
        assert_eq!(
            s.next_at(),
            Some(t0 + 30 * MS + Duration::from_secs(5)),
            "paused"
        );
        let later = t0 + Duration::from_secs(6);
        s.sent();
        s.not_yet(later);
        s.hurry(later + MS);
        assert_eq!(s.next_at(), Some(later + MS), "brought to now");
        assert_eq!(s.waited(later), Duration::from_secs(6));
    }
}
