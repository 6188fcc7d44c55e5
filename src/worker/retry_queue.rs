//! Records waiting for their retry, by due time: the worker keeps sending other records
//! meanwhile, and takes these back when their time comes.

use std::collections::BTreeMap;

use tokio::time::Instant;

pub(crate) struct RetryQueue<T> {
    /// Keyed by due time, then arrival, so equal due times keep their order.
    waiting: BTreeMap<(Instant, u64), T>,
    arrivals: u64,
}

impl<T> Default for RetryQueue<T> {
    fn default() -> Self {
        RetryQueue {
            waiting: BTreeMap::new(),
            arrivals: 0,
        }
    }
}

impl<T> RetryQueue<T> {
    pub(crate) fn push(&mut self, due: Instant, item: T) {
        self.arrivals += 1;
        self.waiting.insert((due, self.arrivals), item);
    }

    /// The next item whose time has come.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        let entry = self.waiting.first_entry()?;
        (entry.key().0 <= now).then(|| entry.remove())
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.waiting.first_key_value().map(|((due, _), _)| *due)
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> {
        std::mem::take(&mut self.waiting).into_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_come_back_in_due_order_when_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut q = RetryQueue::default();
        q.push(t0 + 2 * s, "b");
        q.push(t0 + s, "a");
        q.push(t0 + 2 * s, "c");
        assert_eq!(q.next_due(), Some(t0 + s));
        assert_eq!(q.pop_due(t0), None);
        assert_eq!(q.pop_due(t0 + s), Some("a"));
        assert_eq!(q.pop_due(t0 + s), None);
        assert_eq!(
            q.pop_due(t0 + 3 * s),
            Some("b"),
            "equal due times keep order"
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q.drain().collect::<Vec<_>>(), ["c"]);
        assert_eq!(q.next_due(), None);
    }
}
