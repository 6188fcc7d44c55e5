//! The state the server thread and the [`TestServer`](super::TestServer) handle share: the
//! recorded requests, the stored scores and traces, the status counters and the fault queue.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::header::HeaderMap;
use hyper::StatusCode;
use uuid::Uuid;

use super::server::Req;
use super::{Fault, ReceivedRequest, RequestInfo, StoredRecord};

type Responder = dyn Fn(&RequestInfo) -> Option<Fault> + Send + Sync;

pub(super) struct Shared {
    pub(super) api_key: String,
    pub(super) require_known_traces: bool,
    pub(super) trace_store_delay: Duration,
    pub(super) record_requests: bool,
    pub(super) state: Mutex<State>,
    pub(super) changed: Condvar,
    pub(super) faults: Mutex<Faults>,
    /// `true` while the queue is not empty or a responder is set: lets the common case skip
    /// the faults lock.
    pub(super) faults_armed: AtomicBool,
}

#[derive(Default)]
pub(super) struct Faults {
    pub(super) queue: VecDeque<QueuedFault>,
    pub(super) responder: Option<Arc<Responder>>,
}

pub(super) struct QueuedFault {
    path: Option<String>,
    remaining: usize,
    fault: Fault,
}

pub(super) struct State {
    /// Bumped by `reset_records`, so that a request that arrived before a reset does not
    /// update a record of the new epoch.
    pub(super) epoch: u64,
    pub(super) arrived: usize,
    pub(super) requests: Vec<ReceivedRequest>,
    pub(super) scores: Vec<StoredRecord>,
    pub(super) traces: Vec<StoredRecord>,
    pub(super) trace_index: HashMap<Uuid, usize>,
    /// When each trace becomes stored; `None` = never (an overflowing delay).
    pub(super) known_traces: HashMap<Uuid, Option<Instant>>,
    /// Indexed by status code (100..=999).
    pub(super) status_counts: Vec<usize>,
}

impl Default for State {
    fn default() -> Self {
        State {
            epoch: 0,
            arrived: 0,
            requests: Vec::new(),
            scores: Vec::new(),
            traces: Vec::new(),
            trace_index: HashMap::new(),
            known_traces: HashMap::new(),
            status_counts: vec![0; 1000],
        }
    }
}

/// Where a request stands in the records: its index within its epoch.
#[derive(Clone, Copy)]
pub(super) struct Ticket {
    epoch: u64,
    pub(super) index: usize,
}

/// A record to store when the request completes.
pub(super) enum Store {
    Score(StoredRecord),
    Trace {
        trace_id: Uuid,
        record: StoredRecord,
    },
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn lock_faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    pub(super) fn rearm(&self, faults: &Faults) {
        let armed = !faults.queue.is_empty() || faults.responder.is_some();
        self.faults_armed.store(armed, Ordering::Release);
    }

    pub(super) fn queue_fault(&self, path: Option<String>, n: usize, fault: Fault) {
        if n == 0 {
            return;
        }
        let mut faults = self.lock_faults();
        faults.queue.push_back(QueuedFault {
            path,
            remaining: n,
            fault,
        });
        self.rearm(&faults);
    }

    /// The fault for a request: the oldest matching queue entry, else the responder's answer.
    pub(super) fn pick_fault(
        &self,
        path: &str,
        info: impl FnOnce() -> RequestInfo,
    ) -> Option<Fault> {
        if !self.faults_armed.load(Ordering::Acquire) {
            return None;
        }
        let responder = {
            let mut faults = self.lock_faults();
            let matching = faults.queue.iter().position(|q| match &q.path {
                None => true,
                Some(p) => p == path,
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

    /// Count a request in and, when recording, keep it.
    pub(super) fn arrive(&self, req: &Req) -> Ticket {
        let recorded = self.record_requests.then(|| ReceivedRequest {
            method: req.method.as_str().to_owned(),
            path: req.path.clone(),
            headers: header_vec(&req.headers),
            body: req.body.clone(),
            status: None,
            fault: None,
        });
        let mut state = self.lock_state();
        let ticket = Ticket {
            epoch: state.epoch,
            index: state.arrived,
        };
        state.arrived += 1;
        if let Some(r) = recorded {
            state.requests.push(r);
        }
        drop(state);
        self.changed.notify_all();
        ticket
    }

    /// Record how a request ended and store what it stores.
    pub(super) fn complete(
        &self,
        ticket: Ticket,
        status: Option<StatusCode>,
        fault: Option<Fault>,
        store: Option<Store>,
    ) {
        let mut state = self.lock_state();
        if state.epoch == ticket.epoch {
            if let Some(status) = status {
                if let Some(count) = state.status_counts.get_mut(usize::from(status.as_u16())) {
                    *count += 1;
                }
            }
            if let Some(r) = state.requests.get_mut(ticket.index) {
                r.status = status.map(|s| s.as_u16());
                r.fault = fault;
            }
        }
        match store {
            None => {}
            Some(Store::Score(record)) => state.scores.push(record),
            Some(Store::Trace { trace_id, record }) => {
                match state.trace_index.get(&trace_id) {
                    Some(&i) => {
                        if let Some(slot) = state.traces.get_mut(i) {
                            *slot = record;
                        }
                    }
                    None => {
                        let i = state.traces.len();
                        state.trace_index.insert(trace_id, i);
                        state.traces.push(record);
                    }
                }
                let visible_at = Instant::now().checked_add(self.trace_store_delay);
                state
                    .known_traces
                    .entry(trace_id)
                    .and_modify(|at| {
                        // An upsert never makes a stored trace unstored again.
                        if at.is_none() || (visible_at.is_some() && visible_at < *at) {
                            *at = visible_at;
                        }
                    })
                    .or_insert(visible_at);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    pub(super) fn trace_is_stored(&self, trace_id: &Uuid) -> bool {
        match self.lock_state().known_traces.get(trace_id) {
            Some(Some(at)) => Instant::now() >= *at,
            _ => false,
        }
    }

    pub(super) fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock_state();
        loop {
            if done(&state) {
                return true;
            }
            let now = Instant::now();
            let remaining = match deadline {
                Some(deadline) if deadline <= now => return false,
                Some(deadline) => deadline - now,
                None => Duration::from_secs(3600),
            };
            state = self
                .changed
                .wait_timeout(state, remaining)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

pub(super) fn header_vec(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
