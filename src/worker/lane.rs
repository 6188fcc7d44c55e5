//! One endpoint's records ready to go, its requests under way, and its rate-limit window.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::rate_window::{Answer, RateWindow};

pub(crate) struct Lane<J> {
    ready: VecDeque<J>,
    in_flight: usize,
    window: RateWindow,
}

impl<J> Lane<J> {
    pub(crate) fn new(window: RateWindow) -> Lane<J> {
        Lane {
            ready: VecDeque::new(),
            in_flight: 0,
            window,
        }
    }

    pub(crate) fn push(&mut self, job: J) {
        self.ready.push_back(job);
    }

    /// A record the rate limit sent back goes first in line: it has waited longest.
    pub(crate) fn push_front(&mut self, job: J) {
        self.ready.push_front(job);
    }

    /// The next record to send now, if one is ready and the window lets it go.
    pub(crate) fn next(&mut self, now: Instant) -> Option<J> {
        if self.ready.is_empty() || !self.window.may_send(now, self.in_flight) {
            return None;
        }
        let job = self.ready.pop_front()?;
        self.window.on_send(now);
        self.in_flight += 1;
        Some(job)
    }

    /// A request of this lane, sent at `sent_at`, is over.
    pub(crate) fn finished(&mut self, now: Instant, sent_at: Instant, answer: Answer) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.window.on_answer(now, sent_at, answer);
    }

    /// When the lane wants the worker to look again: the end of a pause, if records wait.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.window.wake_at().filter(|_| !self.ready.is_empty())
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Every record still waiting to be sent (at shutdown).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = J> + '_ {
        self.ready.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimit;
    use std::time::Duration;

    #[test]
    fn the_window_gates_the_line_and_rate_limited_records_go_first() {
        let second = Duration::from_secs(1);
        let window = RateWindow::new(Some(RateLimit::new(2, second)), second, second * 60);
        let mut lane = Lane::new(window);
        let t0 = Instant::now();
        assert_eq!(lane.next(t0), None, "nothing ready");
        for job in 1..=4 {
            lane.push(job);
        }
        assert_eq!(lane.next(t0), Some(1), "the probe");
        assert_eq!(lane.next(t0), None, "waits for the probe's answer");
        lane.finished(t0, t0, Answer::Admitted);
        assert_eq!(lane.next(t0), Some(2));
        assert_eq!(lane.next(t0), None, "the limit of 2 is reached");
        assert_eq!(lane.in_flight(), 1);
        assert_eq!(lane.wake_at(), Some(t0 + second));
        lane.push_front(2);
        assert_eq!(lane.next(t0 + second), Some(2));
        assert_eq!(lane.drain().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(lane.wake_at(), None);
    }
}
