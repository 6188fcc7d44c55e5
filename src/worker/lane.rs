//! One endpoint's records ready to go, its requests under way, and its rate-limit window.

use std::collections::{BTreeMap, VecDeque};

use tokio::time::Instant;

use super::rate_window::{Answer, RateWindow};

pub(crate) struct Lane<J> {
    ready: VecDeque<J>,
    /// When each request under way was sent (how many at each instant).
    in_flight: BTreeMap<Instant, usize>,
    window: RateWindow,
}

impl<J> Lane<J> {
    pub(crate) fn new(window: RateWindow) -> Lane<J> {
        Lane {
            ready: VecDeque::new(),
            in_flight: BTreeMap::new(),
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
        if self.ready.is_empty() || !self.window.may_send(now, self.moving(now)) {
            return None;
        }
        let job = self.ready.pop_front()?;
        self.window.on_send(now);
        *self.in_flight.entry(now).or_insert(0) += 1;
        Some(job)
    }

    /// Requests under way that are not stuck: a request unanswered far longer than the round
    /// trip (a server that hangs) must not hold the line's slow start or its one-at-a-time
    /// tail forever; the request timeout ends it.
    fn moving(&self, now: Instant) -> usize {
        let stuck_before = now.checked_sub(self.window.stuck_after());
        match stuck_before {
            Some(at) => self.in_flight.range(at..).map(|(_, n)| n).sum(),
            None => self.in_flight.values().sum(),
        }
    }

    /// A request of this lane, sent at `sent_at`, is over.
    pub(crate) fn finished(&mut self, now: Instant, sent_at: Instant, answer: Answer) {
        if let Some(n) = self.in_flight.get_mut(&sent_at) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&sent_at);
            }
        }
        self.window.on_answer(now, sent_at, answer);
    }

    /// Records ready to go.
    pub(crate) fn ready(&self) -> usize {
        self.ready.len()
    }

    /// Whether the rate limit holds the line now.
    pub(crate) fn is_paused(&self) -> bool {
        self.window.wake_at().is_some()
    }

    /// When the lane wants the worker to look again: the end of a pause, if records wait.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        if self.ready.is_empty() {
            return None;
        }
        // Or when the oldest request under way counts as stuck, which may free a slot.
        let stuck = self
            .in_flight
            .keys()
            .next()
            .map(|sent| *sent + self.window.stuck_after());
        match (self.window.wake_at(), stuck) {
            (Some(closed), _) => Some(closed),
            (None, stuck) => stuck,
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.values().sum()
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
