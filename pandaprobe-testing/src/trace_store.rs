//! The real server's trace workers, simulated: `POST /traces` only queues a trace; a pool of
//! workers stores queued traces first come first served, each taking `base + per_span × spans`.
//!
//! Nothing runs in the background: when a trace is accepted its stored-at instant is computed
//! from the queue (the earliest free worker), and [`TraceStore::settle`] turns due traces into
//! stored ones whenever someone looks. Every storable submission is a job of its own: each
//! one's upsert is applied when its worker finishes, the first one also makes the trace stored.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long a worker takes to store one trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoreTime {
    pub(crate) base: Duration,
    pub(crate) per_span: Duration,
}

impl StoreTime {
    fn of(&self, spans: usize) -> Duration {
        let spans = u32::try_from(spans).unwrap_or(u32::MAX);
        self.base
            .saturating_add(self.per_span.saturating_mul(spans))
    }
}

#[derive(Clone, Copy, Debug)]
enum Worker {
    Idle,
    BusyUntil(Instant),
    /// Given a job that ends past what an `Instant` can hold.
    Stuck,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pending(Instant),
    Stored(Instant),
    /// Every submission so far failed to store (a NUL character) or never ends.
    Never,
}

/// The workers and the "database" of traces they stored.
#[derive(Debug)]
pub(crate) struct TraceStore {
    time: StoreTime,
    workers: Vec<Worker>,
    fates: HashMap<Uuid, Fate>,
    /// Pending jobs by due instant.
    due: BinaryHeap<Reverse<(Instant, JobId, Uuid)>>,
    next_job: JobId,
}

/// Names one storable submission of a trace.
pub(crate) type JobId = u64;

/// What became of a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Job {
    /// Done when accepted (zero store time): apply it now.
    Now,
    /// Done later: [`TraceStore::settle`] reports it.
    Later(JobId),
    /// Never done (a NUL character, or a job past the end of time).
    Never,
}

impl TraceStore {
    /// `workers` below 1 is taken as 1.
    pub(crate) fn new(time: StoreTime, workers: usize) -> Self {
        TraceStore {
            time,
            workers: vec![Worker::Idle; workers.max(1)],
            fates: HashMap::new(),
            due: BinaryHeap::new(),
            next_job: 0,
        }
    }

    /// Queue a trace accepted at `now` with `spans` spans. A trace that cannot be stored
    /// (`storable == false`) still keeps a worker busy for its time. Re-sending a trace never
    /// unstores it, and a pending one is stored when the earliest of its submissions is.
    ///
    /// Call [`settle`](Self::settle) with the same `now` first.
    pub(crate) fn accept(
        &mut self,
        trace_id: Uuid,
        spans: usize,
        storable: bool,
        now: Instant,
    ) -> Job {
        let done = self.occupy_worker(spans, now);
        let (new, job) = match done {
            Some(at) if storable && at <= now => (Fate::Stored(at), Job::Now),
            Some(at) if storable => {
                let id = self.next_job;
                self.next_job += 1;
                self.due.push(Reverse((at, id, trace_id)));
                (Fate::Pending(at), Job::Later(id))
            }
            _ => (Fate::Never, Job::Never),
        };
        let fate = self.fates.entry(trace_id).or_insert(Fate::Never);
        let better = match (*fate, new) {
            (Fate::Stored(_), _) | (_, Fate::Never) => false,
            (Fate::Never, _) => true,
            (Fate::Pending(old), Fate::Pending(at) | Fate::Stored(at)) => at < old,
        };
        if better {
            *fate = new;
        }
        job
    }

    /// Give the job to the worker free first; when it will be done.
    fn occupy_worker(&mut self, spans: usize, now: Instant) -> Option<Instant> {
        let free_at = |w: &Worker| match *w {
            Worker::Idle => Some(now),
            Worker::BusyUntil(t) => Some(t.max(now)),
            Worker::Stuck => None,
        };
        let worker = self
            .workers
            .iter_mut()
            .filter(|w| free_at(w).is_some())
            .min_by_key(|w| free_at(w))?;
        let done = free_at(worker).and_then(|start| start.checked_add(self.time.of(spans)));
        *worker = done.map_or(Worker::Stuck, Worker::BusyUntil);
        done
    }

    /// Finish every job due by `now`, in order, telling `on_done` about each: the trace, the
    /// job, and whether this job made the trace stored.
    pub(crate) fn settle(&mut self, now: Instant, mut on_done: impl FnMut(Uuid, JobId, bool)) {
        while let Some(Reverse((at, job, trace_id))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            let mut first = false;
            if let Some(fate) = self.fates.get_mut(&trace_id) {
                if matches!(*fate, Fate::Pending(_)) {
                    *fate = Fate::Stored(at);
                    first = true;
                }
            }
            on_done(trace_id, job, first);
        }
    }

    /// When the trace was stored, as of the last [`settle`](Self::settle).
    pub(crate) fn stored_at(&self, trace_id: &Uuid) -> Option<Instant> {
        match self.fates.get(trace_id) {
            Some(Fate::Stored(at)) => Some(*at),
            _ => None,
        }
    }

    /// The next instant a pending trace may become stored.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// The measured defaults: 20 ms + 12 ms per span, two workers.
    fn store() -> TraceStore {
        TraceStore::new(
            StoreTime {
                base: ms(20),
                per_span: ms(12),
            },
            2,
        )
    }

    fn stored_by(store: &mut TraceStore, now: Instant) -> Vec<Uuid> {
        let mut out = Vec::new();
        store.settle(now, |id, _, first| {
            if first {
                out.push(id);
            }
        });
        out
    }

    #[test]
    fn a_small_trace_is_stored_after_its_time() {
        let mut s = store();
        let t0 = Instant::now();
        s.accept(id(1), 1, true, t0);
        assert!(stored_by(&mut s, t0 + ms(31)).is_empty());
        assert_eq!(s.stored_at(&id(1)), None);
        assert_eq!(s.next_due(), Some(t0 + ms(32)));
        assert_eq!(stored_by(&mut s, t0 + ms(32)), vec![id(1)]);
        assert_eq!(s.stored_at(&id(1)), Some(t0 + ms(32)));
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn big_traces_hold_both_workers_and_small_ones_wait_in_line() {
        let mut s = store();
        let t0 = Instant::now();
        s.accept(id(1), 500, true, t0); // 6.02 s
        s.accept(id(2), 250, true, t0); // 3.02 s
        s.accept(id(3), 0, true, t0 + ms(10)); // waits for worker 2
        s.accept(id(4), 0, true, t0 + ms(10)); // then the same worker again
        let when = |s: &mut TraceStore, n| {
            s.settle(t0 + Duration::from_secs(60), |_, _, _| {});
            s.stored_at(&id(n)).map(|at| at - t0)
        };
        assert_eq!(when(&mut s, 1), Some(ms(6020)));
        assert_eq!(when(&mut s, 2), Some(ms(3020)));
        assert_eq!(when(&mut s, 3), Some(ms(3040)));
        assert_eq!(when(&mut s, 4), Some(ms(3060)));
    }

    #[test]
    fn an_idle_pool_starts_at_once() {
        let mut s = store();
        let t0 = Instant::now();
        s.accept(id(1), 0, true, t0);
        s.accept(id(2), 0, true, t0 + Duration::from_secs(1));
        s.settle(t0 + Duration::from_secs(2), |_, _, _| {});
        assert_eq!(s.stored_at(&id(2)), Some(t0 + ms(1020)));
    }

    #[test]
    fn zero_time_stores_at_acceptance() {
        let mut s = TraceStore::new(
            StoreTime {
                base: Duration::ZERO,
                per_span: Duration::ZERO,
            },
            0,
        );
        let t0 = Instant::now();
        s.accept(id(1), 500, true, t0);
        assert_eq!(s.stored_at(&id(1)), Some(t0));
        assert!(stored_by(&mut s, t0).is_empty(), "reported once, by accept");
    }

    #[test]
    fn unstorable_traces_are_never_stored_but_take_a_worker() {
        let mut s = TraceStore::new(
            StoreTime {
                base: ms(100),
                per_span: Duration::ZERO,
            },
            1,
        );
        let t0 = Instant::now();
        s.accept(id(1), 0, false, t0);
        s.accept(id(2), 0, true, t0);
        assert_eq!(stored_by(&mut s, t0 + ms(1000)), vec![id(2)]);
        assert_eq!(s.stored_at(&id(1)), None);
        assert_eq!(s.stored_at(&id(2)), Some(t0 + ms(200)));
    }

    #[test]
    fn upserts_keep_the_earliest_and_never_unstore() {
        let mut s = TraceStore::new(
            StoreTime {
                base: ms(100),
                per_span: ms(10),
            },
            1,
        );
        let t0 = Instant::now();
        s.accept(id(1), 10, true, t0); // due t0+200
        s.accept(id(1), 0, true, t0); // due t0+300: the first one wins
        s.accept(id(1), 0, false, t0); // a failing re-send changes nothing
        assert_eq!(stored_by(&mut s, t0 + ms(1000)), vec![id(1)]);
        assert_eq!(s.stored_at(&id(1)), Some(t0 + ms(200)));
        s.accept(id(1), 0, false, t0 + ms(1000));
        assert_eq!(s.stored_at(&id(1)), Some(t0 + ms(200)));

        // A failed submission followed by a good one.
        s.accept(id(2), 0, false, t0 + ms(2000));
        s.accept(id(2), 0, true, t0 + ms(2000));
        assert_eq!(stored_by(&mut s, t0 + ms(3000)), vec![id(2)]);
        assert_eq!(s.stored_at(&id(2)), Some(t0 + ms(2200)));
    }

    #[test]
    fn a_later_resend_that_finishes_first_wins() {
        let mut s = TraceStore::new(
            StoreTime {
                base: Duration::ZERO,
                per_span: ms(10),
            },
            2,
        );
        let t0 = Instant::now();
        s.accept(id(1), 100, true, t0); // due t0+1000 on worker 1
        s.accept(id(1), 1, true, t0 + ms(5)); // due t0+15 on worker 2
        assert_eq!(stored_by(&mut s, t0 + ms(15)), vec![id(1)]);
        assert!(
            stored_by(&mut s, t0 + ms(2000)).is_empty(),
            "stale entry skipped"
        );
        assert_eq!(s.stored_at(&id(1)), Some(t0 + ms(15)));
    }

    #[test]
    fn every_submission_is_a_job_reported_when_done() {
        let mut s = TraceStore::new(
            StoreTime {
                base: ms(100),
                per_span: Duration::ZERO,
            },
            1,
        );
        let t0 = Instant::now();
        assert_eq!(s.accept(id(1), 0, true, t0), Job::Later(0));
        assert_eq!(s.accept(id(1), 0, false, t0), Job::Never);
        assert_eq!(s.accept(id(1), 0, true, t0), Job::Later(1));
        let mut done = Vec::new();
        s.settle(t0 + ms(1000), |trace, job, first| {
            done.push((trace, job, first))
        });
        assert_eq!(done, [(id(1), 0, true), (id(1), 1, false)]);
    }

    #[test]
    fn a_job_past_the_end_of_time_never_stores() {
        let mut s = TraceStore::new(
            StoreTime {
                base: Duration::MAX,
                per_span: Duration::ZERO,
            },
            1,
        );
        let t0 = Instant::now();
        s.accept(id(1), 0, true, t0);
        s.accept(id(2), 0, true, t0);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.stored_at(&id(1)), None);
        assert_eq!(s.stored_at(&id(2)), None);
    }
}
