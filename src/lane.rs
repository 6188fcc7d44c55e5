//! One endpoint's queue of records ready to go, and its rate-limit pause: the server limits
//! requests per key and per path in one-minute windows and answers 429 without `Retry-After`,
//! so a 429 pauses the whole endpoint, not just the record that met it.

use std::collections::VecDeque;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::time::Instant;

pub(crate) struct Lane<J> {
    pub(crate) ready: VecDeque<J>,
    /// Requests of this endpoint under way.
    pub(crate) in_flight: usize,
    paused_until: Option<Instant>,
    /// After a pause, one request at a time until one succeeds: no storm into a closed window.
    probing: bool,
    /// The pause after a 429 without `Retry-After`: doubling, capped.
    pause_backoff: ExponentialBackoff,
    cap: Duration,
}

impl<J> Lane<J> {
    /// `first_pause` doubles on each failed probe up to `cap`, which also caps a `Retry-After`.
    pub(crate) fn new(first_pause: Duration, cap: Duration) -> Lane<J> {
        Lane {
            ready: VecDeque::new(),
            in_flight: 0,
            paused_until: None,
            probing: false,
            pause_backoff: ExponentialBackoff {
                current_interval: first_pause,
                initial_interval: first_pause,
                randomization_factor: 0.2,
                multiplier: 2.0,
                max_interval: cap,
                max_elapsed_time: None,
                ..ExponentialBackoff::default()
            },
            cap,
        }
    }

    /// Ends a pause whose time is up, so that a past instant never becomes a timer.
    pub(crate) fn expire_pause(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
        }
    }

    /// Whether a request may start now: something is ready, no pause, no probe under way.
    pub(crate) fn can_send(&self) -> bool {
        !self.ready.is_empty()
            && self.paused_until.is_none()
            && !(self.probing && self.in_flight > 0)
    }

    /// When the lane wants the worker to look again: the end of its pause, if records wait.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.paused_until.filter(|_| !self.ready.is_empty())
    }

    /// A request succeeded: the window is open again.
    pub(crate) fn delivered(&mut self) {
        self.probing = false;
        self.pause_backoff.reset();
    }

    /// A 429 came back for `job`: it goes first in line, and the lane pauses for the server's
    /// `Retry-After` (capped) or, without one, for the next doubling pause. Answers to requests
    /// that were already under way when the pause began do not lengthen it again.
    pub(crate) fn rate_limited(&mut self, job: J, retry_after: Option<Duration>, now: Instant) {
        let paused = self.paused_until.is_some_and(|t| t > now);
        let pause = match retry_after {
            Some(server_says) => Some(server_says),
            None if paused => None,
            None => self.pause_backoff.next_backoff(),
        };
        if let Some(pause) = pause {
            let until = now + pause.min(self.cap);
            self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
        }
        self.probing = true;
        self.ready.push_front(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(2);

    fn paused_for(lane: &Lane<u32>, now: Instant) -> Duration {
        lane.paused_until.map_or(Duration::ZERO, |t| t - now)
    }

    #[test]
    fn a_burst_of_429s_pauses_once() {
        let now = Instant::now();
        let mut lane = Lane::new(FIRST, CAP);
        for job in 0..32 {
            lane.rate_limited(job, None, now);
        }
        let pause = paused_for(&lane, now);
        assert!(pause <= FIRST.mul_f64(1.2), "{pause:?}");
        assert_eq!(lane.ready.len(), 32);
        assert!(!lane.can_send());
    }

    #[test]
    fn after_the_pause_one_probe_goes_and_a_failed_probe_doubles_the_pause() {
        let now = Instant::now();
        let mut lane = Lane::new(FIRST, CAP);
        lane.rate_limited(1, None, now);
        lane.rate_limited(2, None, now);
        let later = now + CAP;
        lane.expire_pause(later);
        assert!(lane.can_send());
        let probe = lane.ready.pop_front();
        lane.in_flight = 1;
        assert!(!lane.can_send(), "only the probe may be under way");
        lane.in_flight = 0;
        lane.rate_limited(probe.unwrap_or_default(), None, later);
        let pause = paused_for(&lane, later);
        assert!(pause >= FIRST.mul_f64(2.0 * 0.8), "{pause:?}");
        lane.expire_pause(later + CAP);
        lane.delivered();
        lane.in_flight = 1;
        assert!(lane.can_send(), "the window is open again: no more probing");
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let now = Instant::now();
        let mut lane = Lane::new(FIRST, CAP);
        lane.rate_limited(1, Some(Duration::from_secs(1)), now);
        assert_eq!(paused_for(&lane, now), Duration::from_secs(1));
        lane.rate_limited(2, Some(Duration::from_secs(86_400)), now);
        assert_eq!(paused_for(&lane, now), CAP);
        assert_eq!(lane.wake_at(), Some(now + CAP));
    }
}
