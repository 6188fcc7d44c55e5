//! When the worker looks at the queue. While records keep arriving it polls on its own, every
//! 1 ms at first, doubling after each look that finds nothing, up to 8 ms; then it sleeps until
//! the next interval tick or a producer's wake-up. Producers skip the wake-up (a syscall on
//! their hot path) while it polls, so steady load costs them no syscall at all.

use std::time::Duration;

use tokio::time::Instant;

const FIRST_POLL: Duration = Duration::from_millis(1);
const LAST_POLL: Duration = Duration::from_millis(8);

/// What the worker should do with the shared "awake" flag after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Polling: producers may skip waking it.
    Polling,
    /// Asleep, as before.
    Asleep,
    /// Just stopped polling: producers must wake it again. Records that came in while they
    /// still saw it awake must be taken now, then the worker looks again.
    FellAsleep,
}

pub(crate) struct Poller {
    first: Duration,
    /// How long until the next look of its own; `None` when asleep.
    poll: Option<Duration>,
    next_look: Instant,
    /// Records taken at the last look, to tell whether records arrived since.
    taken_at_last_look: u64,
}

impl Poller {
    /// Never polls slower than `flush_interval`.
    pub(crate) fn new(flush_interval: Duration, now: Instant) -> Poller {
        Poller {
            first: FIRST_POLL.min(flush_interval),
            poll: None,
            next_look: now,
            taken_at_last_look: 0,
        }
    }

    /// A look at the queue, after `taken` records have been taken in all.
    pub(crate) fn look(&mut self, now: Instant, taken: u64) -> Watch {
        if taken != self.taken_at_last_look {
            self.taken_at_last_look = taken;
            self.start(now);
            return Watch::Polling;
        }
        let Some(poll) = self.poll else {
            return Watch::Asleep;
        };
        if now < self.next_look {
            return Watch::Polling;
        }
        let poll = poll * 2;
        if poll <= LAST_POLL {
            self.poll = Some(poll);
            self.next_look = now + poll;
            return Watch::Polling;
        }
        self.poll = None;
        Watch::FellAsleep
    }

    /// A producer woke the worker: keep looking for a while, so that the flag it set is
    /// cleared again by the poll sequence even if nothing could be taken just now.
    pub(crate) fn woken(&mut self, now: Instant) {
        if self.poll.is_none() {
            self.start(now);
        }
    }

    fn start(&mut self, now: Instant) {
        self.poll = Some(self.first);
        self.next_look = now + self.first;
    }

    /// When the worker should look again on its own, if it is polling.
    pub(crate) fn next_look(&self) -> Option<Instant> {
        self.poll.map(|_| self.next_look)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn polls_while_records_arrive_then_backs_off_and_sleeps() {
        let t0 = Instant::now();
        let mut p = Poller::new(Duration::from_secs(1), t0);
        assert_eq!(p.look(t0, 0), Watch::Asleep);
        assert_eq!(p.next_look(), None);
        assert_eq!(p.look(t0, 5), Watch::Polling, "records arrived");
        assert_eq!(p.next_look(), Some(t0 + MS));
        assert_eq!(p.look(t0, 5), Watch::Polling, "not due yet");
        // Nothing new at 1, 3, 7 ms: 2, 4, 8 ms gaps; then asleep.
        assert_eq!(p.look(t0 + MS, 5), Watch::Polling);
        assert_eq!(p.next_look(), Some(t0 + 3 * MS));
        assert_eq!(p.look(t0 + 3 * MS, 5), Watch::Polling);
        assert_eq!(p.look(t0 + 7 * MS, 5), Watch::Polling);
        assert_eq!(p.next_look(), Some(t0 + 15 * MS));
        assert_eq!(p.look(t0 + 15 * MS, 5), Watch::FellAsleep);
        assert_eq!(p.look(t0 + 15 * MS, 5), Watch::Asleep);
        assert_eq!(p.next_look(), None);
    }

    #[test]
    fn a_wake_up_polls_and_new_records_restart_the_fast_looks() {
        let t0 = Instant::now();
        let mut p = Poller::new(Duration::from_secs(1), t0);
        p.woken(t0);
        assert_eq!(p.next_look(), Some(t0 + MS));
        assert_eq!(p.look(t0 + MS, 0), Watch::Polling);
        assert_eq!(p.look(t0 + 2 * MS, 1), Watch::Polling);
        assert_eq!(p.next_look(), Some(t0 + 3 * MS), "back to 1 ms");
    }

    #[test]
    fn a_short_flush_interval_bounds_the_first_poll() {
        let t0 = Instant::now();
        let mut p = Poller::new(Duration::from_micros(200), t0);
        p.woken(t0);
        assert_eq!(p.next_look(), Some(t0 + Duration::from_micros(200)));
    }
}
