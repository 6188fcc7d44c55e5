//! What `flush()` waits on: which records taken off the queue have not reached an outcome yet,
//! by their position in the queue. A flush asked for when `n` records had entered the queue is
//! done once all of the first `n` have an outcome, whatever happened to later ones.

use std::collections::BTreeMap;

#[derive(Default)]
pub(crate) struct FlushBarrier {
    /// Records taken off the queue so far: the next record's position.
    taken: u64,
    /// How many jobs at each position have no outcome yet (a trace and the scores it carries
    /// share one position). Bounded by the worker's window, however long a record is retried.
    open: BTreeMap<u64, u32>,
}

impl FlushBarrier {
    /// Records taken off the queue so far.
    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }

    /// The position of the next record taken off the queue.
    pub(crate) fn take(&mut self) -> u64 {
        self.taken += 1;
        self.taken - 1
    }

    /// One more job at `position` awaits its outcome.
    pub(crate) fn open(&mut self, position: u64) {
        *self.open.entry(position).or_insert(0) += 1;
    }

    /// A job at `position` reached its outcome.
    pub(crate) fn close(&mut self, position: u64) {
        if let Some(n) = self.open.get_mut(&position) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&position);
            }
        }
    }

    /// Whether every record before `target` has been taken and has reached its outcome.
    pub(crate) fn passed(&self, target: u64) -> bool {
        self.taken >= target
            && self
                .open
                .keys()
                .next()
                .is_none_or(|&oldest| oldest >= target)
    }

    /// Records before `target` still without an outcome, counting those not yet taken.
    pub(crate) fn pending_before(&self, target: u64) -> u64 {
        let open: u64 = self.open.range(..target).map(|(_, n)| u64::from(*n)).sum();
        open + target.saturating_sub(self.taken)
    }

    /// Forgets every open job (at shutdown, once they are counted as dropped).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_waits_for_earlier_records_only() {
        let mut b = FlushBarrier::default();
        let first = b.take();
        b.open(first);
        let second = b.take();
        b.open(second);
        b.open(second); // a trace and its score
        let target = 2;
        assert!(!b.passed(target));
        assert_eq!(b.pending_before(target), 3);
        b.close(second);
        b.close(second);
        assert!(!b.passed(target), "the first record is still open");
        let third = b.take();
        b.open(third);
        b.close(first);
        assert!(
            b.passed(target),
            "a later record does not hold the flush up"
        );
        assert!(!b.passed(3));
        assert_eq!(b.pending_before(5), 1 + 2, "one open, two not taken yet");
    }
}
