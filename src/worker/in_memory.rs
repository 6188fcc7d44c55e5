//! A capturing client's requests (`ClientBuilder::capture`): answered by the capture, as a
//! server that stores everything at once would, and handed back like a request's answer, so
//! that everything else in the worker runs as it does against a server.

use uuid::Uuid;

use super::job::Job;
use super::trace_gate::ProbeRequest;
use super::transport::Attempt;
use super::{Route, Worker};
use crate::capture::{Answer, Capture};

/// The attempt a capture's answer stands for: `status`, or 404 for spans or a probe of a trace
/// it was never sent.
fn attempt(status: u16, answer: Answer) -> Attempt {
    match answer {
        Answer::Stored => Attempt::Answered {
            status,
            retry_after: None,
            message: String::new(),
            detail: false,
        },
        Answer::NotFound => Attempt::Answered {
            status: 404,
            retry_after: None,
            message: "Trace not found (captured).".into(),
            detail: true,
        },
    }
}

impl Worker {
    /// A record's request, answered by the capture.
    pub(super) fn answer_in_memory(&mut self, capture: &Capture, job: Job) {
        let (status, answer) = match Route::of(&job) {
            Route::Score => (201, capture.score(&job.body)),
            Route::Trace => (202, capture.trace_sent(&job.body)),
            Route::Spans => (201, capture.spans_added(job.trace_id, &job.body)),
        };
        let key = self.answered(attempt(status, answer));
        self.sending.insert(key, job);
        self.shared.counters.request();
    }

    /// A readiness probe, answered by the capture.
    pub(super) fn probe_in_memory(
        &mut self,
        capture: &Capture,
        trace_id: Uuid,
        probe: &ProbeRequest,
    ) {
        let (status, answer) = match probe {
            ProbeRequest::Get => (200, capture.has_trace(trace_id)),
            ProbeRequest::Span(body) => (201, capture.spans_added(trace_id, body)),
        };
        let key = self.answered(attempt(status, answer));
        self.probes.insert(key, trace_id);
        self.shared.counters.probe();
    }

    /// An answer made in memory, handed back like a request's.
    fn answered(&mut self, attempt: Attempt) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.in_flight.push(Box::pin(async move { (key, attempt) }));
        key
    }
}
