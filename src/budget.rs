//! The byte budget: one bound on the memory of everything the SDK holds for delivery (queued,
//! in the worker's hands, waiting for a retry or for its trace, scores made through an open
//! trace). Each record is charged at the call that hands it in and refused there if it does not
//! fit; its [`Charge`] travels with it and gives the bytes back when it is freed, whatever its
//! outcome, so the count cannot drift from what is really held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What is held, against the limit (`max_queue_bytes`).
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes` if they fit under the limit; `None` (nothing charged) if not.
    pub(crate) fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.checked_add(bytes)?;
            if after > self.limit {
                return None;
            }
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Charge {
                        budget: Some(Arc::clone(self)),
                        bytes,
                    })
                }
                Err(now) => used = now,
            }
        }
    }
}

/// Bytes charged for one record; given back when it is dropped.
#[derive(Debug, Default)]
pub(crate) struct Charge {
    budget: Option<Arc<Budget>>,
    bytes: usize,
}

impl Charge {
    /// Charges nothing (a disabled client, records built in tests).
    pub(crate) fn none() -> Charge {
        Charge::default()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Moves up to `bytes` of this charge into a charge of its own, given back when that one
    /// is dropped: a record sent in parts frees each part's share when the part is done.
    pub(crate) fn split_off(&mut self, bytes: usize) -> Charge {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Charge {
            budget: self.budget.clone(),
            bytes,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_does_not_fit_is_refused_and_charges_nothing() {
        let budget = Budget::new(100);
        let a = budget.try_charge(60).expect("fits");
        assert!(budget.try_charge(41).is_none());
        assert_eq!(budget.used(), 60);
        let b = budget.try_charge(40).expect("fits exactly");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_split_charge_gives_each_part_back_on_its_own() {
        let budget = Budget::new(100);
        let mut whole = budget.try_charge(60).expect("fits");
        let part = whole.split_off(25);
        let too_much = whole.split_off(1000);
        assert_eq!((whole.bytes(), part.bytes(), too_much.bytes()), (0, 25, 35));
        drop(part);
        assert_eq!(budget.used(), 35);
        drop(too_much);
        drop(whole);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_overflowing_charge_is_refused() {
        let budget = Budget::new(usize::MAX);
        let _a = budget.try_charge(usize::MAX - 1).expect("fits");
        assert!(budget.try_charge(2).is_none());
    }
}
