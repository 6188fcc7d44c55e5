//! Flush and shutdown bookkeeping: who waits for what, until when, and what to answer. The
//! worker enforces every deadline itself, so a caller never waits past its timeout, whatever
//! runtime it is on.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::flush_barrier::FlushBarrier;
use crate::config::MAX_DURATION;
use crate::drop_event::DropReason;
use crate::error::{FlushError, Waiting};
use crate::protocol::Reply;

/// Drops not yet reported to a flush or shutdown, or gathered for one.
#[derive(Default, Clone, Copy)]
struct Drops {
    count: u64,
    first: Option<DropReason>,
}

impl Drops {
    fn add(&mut self, reason: DropReason) {
        self.count += 1;
        self.first.get_or_insert(reason);
    }

    fn merge(&mut self, other: Drops) {
        self.count += other.count;
        if let Some(reason) = other.first {
            self.first.get_or_insert(reason);
        }
    }

    /// `Ok` if none, else the error that says how many and why.
    fn result(&self) -> Result<(), FlushError> {
        match self.first {
            None => Ok(()),
            Some(reason) => Err(FlushError::Dropped {
                dropped: self.count,
                reason,
            }),
        }
    }
}

/// A flush caller waiting for every record before `target` in queue order.
struct FlushWaiter {
    target: u64,
    /// Drops of the records it waits for: those before `target` that no earlier call reported,
    /// and those dropped while it waits (each concurrent flush sees its own).
    drops: Drops,
    deadline: Instant,
    timeout: Duration,
    reply: Reply,
}

struct ShutdownState {
    deadline: Instant,
    timeout: Duration,
    replies: Vec<Reply>,
    /// Drops while it runs.
    drops: Drops,
}

/// Positions of drops kept for the next flush at most; older ones are merged into one entry.
const MAX_UNREPORTED: usize = 4096;

#[derive(Default)]
pub(crate) struct Waiters {
    flushes: Vec<FlushWaiter>,
    shutdown: Option<ShutdownState>,
    /// Drops that happened while no flush or shutdown waited for them, by queue position: each
    /// is reported once, to the next flush whose records include it.
    unreported: BTreeMap<u64, Drops>,
}

/// `now + timeout`, at most a year ahead, so that `Duration::MAX` cannot overflow.
fn deadline(now: Instant, timeout: Duration) -> Instant {
    now + timeout.min(MAX_DURATION)
}

impl Waiters {
    /// A flush of every record before position `target`.
    pub(crate) fn flush(&mut self, target: u64, timeout: Duration, reply: Reply, now: Instant) {
        if self.shutdown.is_some() {
            reply.send(Err(FlushError::ShutDown));
            return;
        }
        let drops = self.take_drops(target);
        self.flushes.push(FlushWaiter {
            target,
            drops,
            deadline: deadline(now, timeout),
            timeout,
            reply,
        });
    }

    /// Shutdown begins (or a later caller joins it; the earliest deadline wins).
    pub(crate) fn shutdown(&mut self, timeout: Duration, reply: Option<Reply>, now: Instant) {
        let deadline = deadline(now, timeout);
        let state = self.shutdown.get_or_insert(ShutdownState {
            deadline,
            timeout,
            replies: Vec::new(),
            drops: Drops::default(),
        });
        if deadline < state.deadline {
            state.deadline = deadline;
            state.timeout = timeout;
        }
        state.replies.extend(reply);
    }

    /// Whether a flush waits.
    pub(crate) fn has_flushes(&self) -> bool {
        !self.flushes.is_empty()
    }

    #[cfg(test)]
    fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// A record at queue position `position` was dropped.
    pub(crate) fn dropped(&mut self, position: u64, reason: DropReason) {
        let mut seen = false;
        for waiter in self.flushes.iter_mut().filter(|w| position < w.target) {
            waiter.drops.add(reason);
            seen = true;
        }
        if let Some(state) = &mut self.shutdown {
            state.drops.add(reason);
            seen = true;
        }
        if seen {
            return;
        }
        self.unreported.entry(position).or_default().add(reason);
        if self.unreported.len() > MAX_UNREPORTED {
            // Merge the older half into its newest position: reported a little early, never lost.
            let split = self.unreported.keys().nth(MAX_UNREPORTED / 2).copied();
            if let Some(split) = split {
                let newer = self.unreported.split_off(&split);
                let older = std::mem::replace(&mut self.unreported, newer);
                if let Some((&last, _)) = older.last_key_value() {
                    let merged = self.unreported.entry(last).or_default();
                    older.values().for_each(|d| merged.merge(*d));
                }
            }
        }
    }

    /// Takes the unreported drops of records before `target`.
    fn take_drops(&mut self, target: u64) -> Drops {
        let newer = self.unreported.split_off(&target);
        let older = std::mem::replace(&mut self.unreported, newer);
        let mut drops = Drops::default();
        older.values().for_each(|d| drops.merge(*d));
        drops
    }

    /// Answers the flushes that are done or out of time; `waiting` says where what the worker
    /// holds is, for a timeout.
    pub(crate) fn answer_flushes(
        &mut self,
        barrier: &FlushBarrier,
        now: Instant,
        waiting: Waiting,
    ) {
        let mut i = 0;
        while i < self.flushes.len() {
            let waiter = &self.flushes[i];
            if waiter.reply.is_abandoned() {
                // A cancelled `flush_async` (its future dropped): nobody waits for the answer,
                // so it is not kept until its deadline, which may be a year away.
                self.flushes.swap_remove(i);
                continue;
            }
            let done = barrier.passed(waiter.target);
            if done || now >= waiter.deadline {
                let waiter = self.flushes.swap_remove(i);
                let result = if done {
                    waiter.drops.result()
                } else {
                    Err(FlushError::Timeout {
                        pending: barrier.pending_before(waiter.target),
                        timeout: waiter.timeout,
                        waiting,
                    })
                };
                waiter.reply.send(result);
            } else {
                i += 1;
            }
        }
    }

    /// Whether the shutdown should end now: everything is delivered, or its time is up.
    pub(crate) fn shutdown_due(&self, drained: bool, now: Instant) -> bool {
        self.shutdown
            .as_ref()
            .is_some_and(|state| drained || now >= state.deadline)
    }

    /// Ends the shutdown: `abandoned` records were dropped at its deadline. Answers every
    /// caller and returns the outcome, for later calls.
    pub(crate) fn finish_shutdown(
        &mut self,
        abandoned: u64,
        waiting: Waiting,
    ) -> Result<(), FlushError> {
        let Some(state) = self.shutdown.take() else {
            return Ok(());
        };
        let mut drops = self.take_drops(u64::MAX);
        drops.merge(state.drops);
        let result = if abandoned > 0 {
            Err(FlushError::Timeout {
                pending: abandoned,
                timeout: state.timeout,
                waiting,
            })
        } else {
            drops.result()
        };
        for reply in state.replies {
            reply.send(result.clone());
        }
        for waiter in self.flushes.drain(..) {
            waiter.reply.send(Err(FlushError::ShutDown));
        }
        result
    }

    /// The worker died: every caller learns it.
    pub(crate) fn fail_all(&mut self) {
        for waiter in self.flushes.drain(..) {
            waiter.reply.send(Err(FlushError::WorkerDied));
        }
        if let Some(state) = self.shutdown.take() {
            for reply in state.replies {
                reply.send(Err(FlushError::WorkerDied));
            }
        }
    }

    /// The earliest deadline the worker must wake for.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let flushes = self.flushes.iter().map(|w| w.deadline);
        let shutdown = self.shutdown.as_ref().map(|s| s.deadline);
        flushes.chain(shutdown).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn reply() -> (Reply, crossbeam_channel::Receiver<Result<(), FlushError>>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        (Reply::Blocking(tx), rx)
    }

    #[test]
    fn a_flush_is_answered_when_its_records_are_done_with_the_drops_among_them() {
        let t0 = Instant::now();
        let mut w = Waiters::default();
        let mut barrier = FlushBarrier::default();
        let (a, b) = (barrier.take(), barrier.take());
        barrier.open(a);
        barrier.open(b);
        let (tx, rx) = reply();
        w.flush(2, SECOND, tx, t0);
        assert_eq!(w.next_deadline(), Some(t0 + SECOND));
        w.dropped(a, DropReason::Rejected);
        barrier.close(a);
        w.dropped(7, DropReason::RetriesExhausted); // a later record: not this flush's
        w.answer_flushes(&barrier, t0, Waiting::default());
        assert!(rx.try_recv().is_err(), "b is still open");
        barrier.close(b);
        w.answer_flushes(&barrier, t0, Waiting::default());
        assert_eq!(
            rx.try_recv(),
            Ok(Err(FlushError::Dropped {
                dropped: 1,
                reason: DropReason::Rejected
            }))
        );
        assert_eq!(w.next_deadline(), None);

        // A drop before the flush was asked for is reported too, once.
        while barrier.taken() < 8 {
            barrier.take();
        }
        let (tx, rx) = reply();
        w.flush(8, SECOND, tx, t0);
        w.answer_flushes(&barrier, t0, Waiting::default());
        assert!(matches!(
            rx.try_recv(),
            Ok(Err(FlushError::Dropped { dropped: 1, .. }))
        ));
        let (tx, rx) = reply();
        w.flush(8, SECOND, tx, t0);
        w.answer_flushes(&barrier, t0, Waiting::default());
        assert_eq!(rx.try_recv(), Ok(Ok(())), "already reported");
    }

    #[test]
    fn unreported_drops_are_bounded_and_never_lost() {
        let mut w = Waiters::default();
        for position in 0..(3 * MAX_UNREPORTED as u64) {
            w.dropped(position, DropReason::Rejected);
        }
        assert!(w.unreported.len() <= MAX_UNREPORTED + 1);
        assert_eq!(w.take_drops(u64::MAX).count, 3 * MAX_UNREPORTED as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_times_out_at_its_deadline_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut w = Waiters::default();
        let mut barrier = FlushBarrier::default();
        let a = barrier.take();
        barrier.open(a);
        let (tx, rx) = reply();
        w.flush(1, SECOND, tx, t0);
        tokio::time::sleep_until(w.next_deadline().expect("a deadline")).await;
        let waiting = Waiting {
            in_flight: 1,
            ..Waiting::default()
        };
        w.answer_flushes(&barrier, Instant::now(), waiting);
        assert_eq!(
            rx.try_recv(),
            Ok(Err(FlushError::Timeout {
                pending: 1,
                timeout: SECOND,
                waiting,
            }))
        );
        assert_eq!(Instant::now() - t0, SECOND);
    }

    #[test]
    fn shutdown_takes_the_earliest_deadline_and_answers_everyone() {
        let t0 = Instant::now();
        let mut w = Waiters::default();
        let (flush_tx, flush_rx) = reply();
        w.flush(5, 10 * SECOND, flush_tx, t0);
        let (a, a_rx) = reply();
        let (b, b_rx) = reply();
        w.shutdown(5 * SECOND, Some(a), t0);
        w.shutdown(2 * SECOND, Some(b), t0);
        w.shutdown(Duration::MAX, None, t0);
        assert!(w.shutting_down());
        let (late, late_rx) = reply();
        w.flush(9, SECOND, late, t0);
        assert_eq!(late_rx.try_recv(), Ok(Err(FlushError::ShutDown)));
        assert!(!w.shutdown_due(false, t0 + SECOND));
        assert!(w.shutdown_due(false, t0 + 2 * SECOND));
        assert!(w.shutdown_due(true, t0));
        let expected = Err(FlushError::Timeout {
            pending: 3,
            timeout: 2 * SECOND,
            waiting: Waiting::default(),
        });
        assert_eq!(w.finish_shutdown(3, Waiting::default()), expected);
        assert_eq!(a_rx.try_recv(), Ok(expected.clone()));
        assert_eq!(b_rx.try_recv(), Ok(expected));
        assert_eq!(flush_rx.try_recv(), Ok(Err(FlushError::ShutDown)));
        assert!(!w.shutting_down());
    }

    #[test]
    fn concurrent_flushes_each_see_the_drops_of_their_records() {
        let t0 = Instant::now();
        let mut w = Waiters::default();
        let mut barrier = FlushBarrier::default();
        let positions: Vec<u64> = (0..3).map(|_| barrier.take()).collect();
        for &p in &positions {
            barrier.open(p);
        }
        w.dropped(positions[0], DropReason::Rejected); // before any flush: the next one's
        let (a, a_rx) = reply();
        let (b, b_rx) = reply();
        w.flush(2, SECOND, a, t0);
        w.flush(3, SECOND, b, t0);
        w.dropped(positions[1], DropReason::RetriesExhausted); // both wait for it
        w.dropped(positions[2], DropReason::Rejected); // only the second
        for &p in &positions {
            barrier.close(p);
        }
        w.answer_flushes(&barrier, t0, Waiting::default());
        let dropped = |n, reason| Ok(Err(FlushError::Dropped { dropped: n, reason }));
        assert_eq!(a_rx.try_recv(), dropped(2, DropReason::Rejected));
        assert_eq!(b_rx.try_recv(), dropped(2, DropReason::RetriesExhausted));
        let (c, c_rx) = reply();
        w.flush(3, SECOND, c, t0);
        w.answer_flushes(&barrier, t0, Waiting::default());
        assert_eq!(
            c_rx.try_recv(),
            Ok(Ok(())),
            "reported already, to the earlier ones"
        );
    }

    #[test]
    fn the_worker_wakes_for_the_earliest_deadline() {
        let t0 = Instant::now();
        let mut w = Waiters::default();
        assert_eq!(w.next_deadline(), None);
        let (f, _f_rx) = reply();
        w.flush(1, 2 * SECOND, f, t0);
        assert_eq!(w.next_deadline(), Some(t0 + 2 * SECOND));
        w.shutdown(SECOND, None, t0);
        assert_eq!(w.next_deadline(), Some(t0 + SECOND));
    }

    #[test]
    fn a_dead_worker_answers_every_caller() {
        let t0 = Instant::now();
        let mut w = Waiters::default();
        let (f, f_rx) = reply();
        w.flush(1, SECOND, f, t0);
        let (s, s_rx) = reply();
        w.shutdown(SECOND, Some(s), t0);
        w.fail_all();
        assert_eq!(f_rx.try_recv(), Ok(Err(FlushError::WorkerDied)));
        assert_eq!(s_rx.try_recv(), Ok(Err(FlushError::WorkerDied)));
    }
}
