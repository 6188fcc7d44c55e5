//! Which fault, if any, a request gets: the queue filled by `fail_next`/`fail_next_on`, then
//! the responder.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sync::lock;
use crate::{Fault, RequestInfo};

pub(crate) type Responder = dyn Fn(&RequestInfo) -> Option<Fault> + Send + Sync;

#[derive(Default)]
struct Faults {
    queue: VecDeque<QueuedFault>,
    responder: Option<Arc<Responder>>,
}

struct QueuedFault {
    /// `None` matches every path; a template such as `/traces/{trace_id}` matches its
    /// concrete paths.
    path: Option<String>,
    remaining: usize,
    fault: Fault,
}

#[derive(Default)]
pub(crate) struct FaultQueue {
    faults: Mutex<Faults>,
    /// `true` while the queue is not empty or a responder is set: lets the common case skip
    /// the lock.
    armed: AtomicBool,
}

impl FaultQueue {
    fn lock(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    fn rearm(&self, faults: &Faults) {
        let armed = !faults.queue.is_empty() || faults.responder.is_some();
        self.armed.store(armed, Ordering::Release);
    }

    pub(crate) fn push(&self, path: Option<String>, n: usize, fault: Fault) {
        if n == 0 {
            return;
        }
        let mut faults = self.lock();
        faults.queue.push_back(QueuedFault {
            path,
            remaining: n,
            fault,
        });
        self.rearm(&faults);
    }

    pub(crate) fn set_responder(&self, responder: Arc<Responder>) {
        let mut faults = self.lock();
        faults.responder = Some(responder);
        self.rearm(&faults);
    }

    pub(crate) fn clear(&self) {
        let mut faults = self.lock();
        faults.queue.clear();
        faults.responder = None;
        self.rearm(&faults);
    }

    /// The fault for a request: the oldest matching queue entry, else the responder's answer.
    pub(crate) fn pick(&self, path: &str, info: impl FnOnce() -> RequestInfo) -> Option<Fault> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let responder = {
            let mut faults = self.lock();
            let matching = faults.queue.iter().position(|q| {
                q.path
                    .as_deref()
                    .is_none_or(|p| crate::trace_paths::matches(p, path))
            });
            if let Some(pos) = matching {
                let entry = &mut faults.queue[pos];
                entry.remaining = entry.remaining.saturating_sub(1);
                let fault = if entry.remaining == 0 {
                    faults.queue.remove(pos).map(|q| q.fault)
                } else {
                    Some(entry.fault.clone())
                };
                self.rearm(&faults);
                return fault;
            }
            faults.responder.clone()
        };
        // Called without any lock held, so a responder may use the `TestServer` freely.
        responder.and_then(|f| f(&info()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RequestInfo {
        RequestInfo {
            method: "POST".into(),
            path: "/a".into(),
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            index: 0,
        }
    }

    #[test]
    fn queue_in_order_then_responder() {
        let q = FaultQueue::default();
        assert_eq!(q.pick("/a", info), None);
        q.push(Some("/b".into()), 1, Fault::Reset);
        q.push(None, 2, Fault::Status(503));
        q.set_responder(Arc::new(|_| Some(Fault::Hang)));
        assert_eq!(q.pick("/a", info), Some(Fault::Status(503)));
        assert_eq!(q.pick("/b", info), Some(Fault::Reset));
        assert_eq!(q.pick("/b", info), Some(Fault::Status(503)));
        assert_eq!(q.pick("/b", info), Some(Fault::Hang));
        q.clear();
        assert_eq!(q.pick("/b", info), None);
        q.push(None, 0, Fault::Reset);
        assert_eq!(q.pick("/b", info), None);
    }
}
