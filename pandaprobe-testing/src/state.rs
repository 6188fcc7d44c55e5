//! The state the server thread and the [`TestServer`](crate::TestServer) handle share: the
//! settings, the recorded requests, the accepted scores and traces, the status counters, the
//! trace workers and the trace database, the rate limiter, the quota and the fault queue.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::fault_queue::FaultQueue;
use crate::quota::Quota;
use crate::rate_limit::{RateLimit, RateLimits};
use crate::records::{header_vec, Req};
use crate::sync::lock;
use crate::trace_db::{TraceDb, TraceRead};
use crate::trace_store::{Job, JobId, StoreTime, TraceStore};
use crate::{Fault, ReceivedRequest, StoredRecord};

/// Longest a wait sleeps without a deadline before looking again.
const LONGEST_NAP: Duration = Duration::from_secs(3600);

/// How the builder configured the server.
pub(crate) struct Settings {
    pub(crate) api_key: String,
    pub(crate) require_known_traces: bool,
    pub(crate) record_requests: bool,
    pub(crate) rate_limits: Vec<(String, RateLimit)>,
    pub(crate) store_time: StoreTime,
    pub(crate) store_workers: usize,
    pub(crate) trace_quota: Option<u64>,
    pub(crate) span_write_time: Duration,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

pub(crate) struct Shared {
    /// Set: connections speak TLS.
    tls: Option<tokio_rustls::TlsAcceptor>,
    api_key: String,
    require_known_traces: bool,
    record_requests: bool,
    span_write_time: Duration,
    rate_limits: RateLimits,
    quota: Quota,
    faults: FaultQueue,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Bumped by `reset_records`, so that a request that arrived before a reset does not
    /// update a record of the new epoch.
    epoch: u64,
    records: Records,
    /// The trace workers. Like `db` and `pending`, survives `reset_records`.
    store: TraceStore,
    /// What the workers stored, and what `POST /traces/{id}/spans` added.
    db: TraceDb,
    /// Submissions waiting for a worker: project and body.
    pending: HashMap<JobId, (String, Value)>,
}

struct Records {
    arrived: usize,
    requests: Vec<ReceivedRequest>,
    scores: Vec<StoredRecord>,
    traces: Vec<StoredRecord>,
    trace_index: HashMap<Uuid, usize>,
    /// How many of `traces` are stored.
    stored_traces: usize,
    /// Indexed by status code (100..=999).
    status_counts: Vec<usize>,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            arrived: 0,
            requests: Vec::new(),
            scores: Vec::new(),
            traces: Vec::new(),
            trace_index: HashMap::new(),
            stored_traces: 0,
            status_counts: vec![0; 1000],
        }
    }
}

/// Where a request stands in the records: its index within its epoch.
#[derive(Clone, Copy)]
pub(crate) struct Ticket {
    epoch: u64,
    index: usize,
}

impl Ticket {
    pub(crate) fn index(&self) -> usize {
        self.index
    }
}

/// A record to store when the request completes.
pub(crate) enum Store {
    Score(StoredRecord),
    /// A trace accepted with `202`, for the workers to store (unless it is not `storable`)
    /// under `project`.
    Trace {
        record: StoredRecord,
        project: String,
        spans: usize,
        storable: bool,
    },
    /// Spans added to a stored trace, each with its `span_id`.
    Spans {
        trace_id: Uuid,
        spans: Vec<Value>,
    },
}

impl State {
    /// Let the workers finish what is due by `now`.
    fn settle(&mut self, now: Instant) {
        let records = &mut self.records;
        let (db, pending) = (&mut self.db, &mut self.pending);
        self.store.settle(now, |trace_id, job, first| {
            if let Some((project, body)) = pending.remove(&job) {
                db.upsert_trace(&project, trace_id, &body);
            }
            if first && records.trace_index.contains_key(&trace_id) {
                records.stored_traces += 1;
            }
        });
    }

    fn accept_trace(
        &mut self,
        record: StoredRecord,
        project: String,
        spans: usize,
        storable: bool,
        now: Instant,
    ) {
        let trace_id = record.id;
        self.settle(now);
        let was_stored = self.store.stored_at(&trace_id).is_some();
        match self.store.accept(trace_id, spans, storable, now) {
            Job::Now => self.db.upsert_trace(&project, trace_id, &record.body),
            Job::Later(job) => {
                self.pending.insert(job, (project, record.body.clone()));
            }
            Job::Never => {}
        }
        let is_stored = self.store.stored_at(&trace_id).is_some();
        let records = &mut self.records;
        let is_new = match records.trace_index.get(&trace_id) {
            Some(&i) => {
                if let Some(slot) = records.traces.get_mut(i) {
                    *slot = record;
                }
                false
            }
            None => {
                records.trace_index.insert(trace_id, records.traces.len());
                records.traces.push(record);
                true
            }
        };
        if is_stored && (is_new || !was_stored) {
            records.stored_traces += 1;
        }
    }
}

impl Shared {
    pub(crate) fn new(settings: Settings) -> Self {
        Shared {
            tls: settings.tls,
            api_key: settings.api_key,
            require_known_traces: settings.require_known_traces,
            record_requests: settings.record_requests,
            span_write_time: settings.span_write_time,
            rate_limits: RateLimits::new(&settings.rate_limits),
            quota: Quota::new(settings.trace_quota),
            faults: FaultQueue::default(),
            state: Mutex::new(State {
                epoch: 0,
                records: Records::default(),
                store: TraceStore::new(settings.store_time, settings.store_workers),
                db: TraceDb::default(),
                pending: HashMap::new(),
            }),
            changed: Condvar::new(),
        }
    }

    /// The TLS acceptor, for a server started with `tls`.
    pub(crate) fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(crate) fn api_key(&self) -> &str {
        &self.api_key
    }

    pub(crate) fn require_known_traces(&self) -> bool {
        self.require_known_traces
    }

    /// How long `POST /traces/{id}/spans` takes per span before it answers.
    pub(crate) fn span_write_time(&self) -> Duration {
        self.span_write_time
    }

    pub(crate) fn faults(&self) -> &FaultQueue {
        &self.faults
    }

    /// Count a request against its path's rate limit; the refusal body when it is over.
    pub(crate) fn rate_limited(&self, path: &str, api_key: Option<&[u8]>) -> Option<&str> {
        self.rate_limits.check(path, api_key, Instant::now())
    }

    pub(crate) fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Count a request in and, when recording, keep it.
    pub(crate) fn arrive(&self, req: &Req) -> Ticket {
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
            index: state.records.arrived,
        };
        state.records.arrived += 1;
        if let Some(r) = recorded {
            state.records.requests.push(r);
        }
        drop(state);
        self.changed.notify_all();
        ticket
    }

    /// Record how a request ended and store what it stores.
    pub(crate) fn complete(
        &self,
        ticket: Ticket,
        status: Option<StatusCode>,
        fault: Option<Fault>,
        store: Option<Store>,
    ) {
        let now = Instant::now();
        let mut state = self.lock_state();
        if state.epoch == ticket.epoch {
            let records = &mut state.records;
            if let Some(status) = status {
                if let Some(count) = records.status_counts.get_mut(usize::from(status.as_u16())) {
                    *count += 1;
                }
            }
            if let Some(r) = records.requests.get_mut(ticket.index) {
                r.status = status.map(|s| s.as_u16());
                r.fault = fault;
            }
        }
        match store {
            None => {}
            Some(Store::Score(mut record)) => {
                record.stored_at = Some(now);
                state.records.scores.push(record);
            }
            Some(Store::Trace {
                record,
                project,
                spans,
                storable,
            }) => state.accept_trace(record, project, spans, storable, now),
            Some(Store::Spans { trace_id, spans }) => {
                state.settle(now);
                state.db.add_spans(trace_id, &spans);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    pub(crate) fn trace_stored_at(&self, trace_id: &Uuid) -> Option<Instant> {
        let mut state = self.lock_state();
        state.settle(Instant::now());
        state.store.stored_at(trace_id)
    }

    /// Whether the trace is stored under `project`.
    pub(crate) fn has_trace(&self, trace_id: &Uuid, project: &str) -> bool {
        let mut state = self.lock_state();
        state.settle(Instant::now());
        state.db.has_trace(trace_id, Some(project))
    }

    /// The stored trace as `GET` returns it, under `project` (`None`: any project).
    pub(crate) fn read_trace(&self, trace_id: &Uuid, project: Option<&str>) -> Option<TraceRead> {
        let mut state = self.lock_state();
        state.settle(Instant::now());
        state.db.read(trace_id, project)
    }

    pub(crate) fn scores(&self) -> Vec<StoredRecord> {
        self.lock_state().records.scores.clone()
    }

    /// The accepted traces, each with when it was stored (if it is).
    pub(crate) fn traces(&self) -> Vec<StoredRecord> {
        let mut state = self.lock_state();
        state.settle(Instant::now());
        let mut traces = state.records.traces.clone();
        for trace in &mut traces {
            trace.stored_at = state.store.stored_at(&trace.id);
        }
        traces
    }

    pub(crate) fn requests(&self) -> Vec<ReceivedRequest> {
        self.lock_state().records.requests.clone()
    }

    pub(crate) fn score_count(&self) -> usize {
        self.lock_state().records.scores.len()
    }

    pub(crate) fn trace_count(&self) -> usize {
        self.lock_state().records.traces.len()
    }

    pub(crate) fn stored_trace_count(&self) -> usize {
        let mut state = self.lock_state();
        state.settle(Instant::now());
        state.records.stored_traces
    }

    pub(crate) fn request_count(&self) -> usize {
        self.lock_state().records.arrived
    }

    pub(crate) fn status_count(&self, status: u16) -> usize {
        count_of(&self.lock_state().records, status)
    }

    pub(crate) fn wait_for_scores(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| r.scores.len() >= n)
    }

    pub(crate) fn wait_for_traces(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| r.traces.len() >= n)
    }

    pub(crate) fn wait_for_stored_traces(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| r.stored_traces >= n)
    }

    pub(crate) fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| r.arrived >= n)
    }

    pub(crate) fn wait_for_status(&self, status: u16, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| count_of(r, status) >= n)
    }

    /// Wait for `done`, waking on every change and whenever a queued trace falls due.
    fn wait_until(&self, timeout: Duration, done: impl Fn(&Records) -> bool) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock_state();
        loop {
            let now = Instant::now();
            state.settle(now);
            if done(&state.records) {
                return true;
            }
            let wake = match (deadline, state.store.next_due()) {
                (Some(deadline), _) if deadline <= now => return false,
                (Some(deadline), Some(due)) => deadline.min(due),
                (Some(at), None) | (None, Some(at)) => at,
                (None, None) => now + LONGEST_NAP,
            };
            let nap = wake.saturating_duration_since(now).min(LONGEST_NAP);
            state = self
                .changed
                .wait_timeout(state, nap)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Forget the records; keep the trace database, the quota, the rate-limit windows and
    /// the faults.
    pub(crate) fn reset_records(&self) {
        let mut state = self.lock_state();
        state.epoch = state.epoch.wrapping_add(1);
        state.records = Records::default();
        drop(state);
        self.changed.notify_all();
    }
}

fn count_of(records: &Records, status: u16) -> usize {
    records
        .status_counts
        .get(usize::from(status))
        .copied()
        .unwrap_or(0)
}
