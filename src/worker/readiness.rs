//! Asking the server whether a trace is stored: which request asks it most cheaply, sending
//! the probes the trace gate says are due, and what each answer means.
//!
//! Two questions cost nothing from the records' rate limits (the server limits each concrete
//! path apart, so every trace id has its own 200 a minute on each):
//!
//! - `GET /traces/{id}` answers 66 bytes (404) until the trace is stored, then the whole trace:
//!   cheap for a small trace, 254 KB for one of 500 spans;
//! - `POST /traces/{id}/spans` with one of the trace's spans exactly as it was sent answers
//!   404 until the trace is stored, then a few bytes (201); the server upserts the span with
//!   the same values, so nothing changes. It costs the span's bytes each time.
//!
//! So a small trace is asked with `GET`, a big one by re-posting its smallest span. Neither counts
//! in the account's usage: the backend increments it on `POST /traces` only.

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use super::job::request_id;
use super::trace_gate::{ProbeRequest, Readiness, Released};
use super::transport::Attempt;
use super::Worker;
use crate::body::spans_body;
use crate::drop_event::DropReason;
use crate::record_size::span_bytes;
use crate::trace_data::{TraceData, MAX_SPANS_PER_REQUEST};

/// Up to this size of trace body, `GET` (whose one success returns about twice as much).
const GET_UP_TO: usize = 2048;
/// Up to this size of span, re-posting it; a trace whose spans are all bigger is asked with
/// `GET` (66 bytes a question, the whole trace once).
const SPAN_UP_TO: usize = 2048;
/// The wait after a probe met the path's rate limit without `Retry-After`.
const RATE_LIMITED_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// The cheapest question for a trace whose first request's body is `body_len` bytes.
pub(super) fn probe_for(trace: &TraceData, body_len: usize) -> ProbeRequest {
    if body_len <= GET_UP_TO {
        return ProbeRequest::Get;
    }
    let smallest = trace
        .spans
        .iter()
        .take(MAX_SPANS_PER_REQUEST)
        .min_by_key(|span| span_bytes(span));
    match smallest {
        Some(span) if span_bytes(span) <= SPAN_UP_TO => {
            ProbeRequest::Span(Bytes::from(spans_body(std::slice::from_ref(span))))
        }
        _ => ProbeRequest::Get,
    }
}

/// What an answer says of the trace. A 404 is "not stored yet" unless it is the framework's
/// own `Not Found` (no such route: a server that cannot be asked).
fn readiness(attempt: &Attempt) -> Readiness {
    match attempt {
        Attempt::Answered { status, .. } if (200..300).contains(status) => Readiness::Stored,
        Attempt::Answered {
            status: 404,
            message,
            ..
        } => {
            if message == "Not Found" {
                Readiness::Unknowable
            } else {
                Readiness::NotYet
            }
        }
        Attempt::Answered {
            status: 429,
            retry_after,
            ..
        } => Readiness::Paused(retry_after.unwrap_or(RATE_LIMITED_PAUSE)),
        Attempt::Answered {
            status: 408 | 500..=599,
            ..
        }
        | Attempt::Failed { .. } => Readiness::NotYet,
        Attempt::Answered { .. } => Readiness::Unknowable,
    }
}

impl Worker {
    /// Sends the probes that are due, at most `room`.
    pub(super) fn start_probes(&mut self, now: Instant, room: usize) {
        for (trace_id, probe) in self.gate.due_probes(now, room) {
            let config = &self.shared.config;
            if let Some(capture) = config.capture.clone() {
                self.probe_in_memory(&capture, trace_id, &probe);
                continue;
            }
            let (url, body) = match probe {
                ProbeRequest::Get => (config.trace_url(trace_id, &[]), None),
                ProbeRequest::Span(body) => (config.trace_url(trace_id, &["spans"]), Some(body)),
            };
            let Some(url) = url else {
                self.probe_answered(trace_id, Readiness::Unknowable, None, now);
                continue;
            };
            let client = self.transport.client(false);
            let key = self.launch(client, url, body, request_id());
            self.probes.insert(key, trace_id);
            self.shared.counters.probe();
        }
    }

    /// A probe's answer arrived.
    pub(super) fn on_probe_done(&mut self, trace_id: Uuid, attempt: &Attempt, now: Instant) {
        let readiness = readiness(attempt);
        tracing::trace!(target: "pandaprobe", %trace_id, status = ?attempt.status(), ?readiness, "readiness probe");
        self.probe_answered(trace_id, readiness, Some(attempt), now);
    }

    fn probe_answered(
        &mut self,
        trace_id: Uuid,
        readiness: Readiness,
        attempt: Option<&Attempt>,
        now: Instant,
    ) {
        match self.gate.probe_answered(trace_id, readiness, now) {
            Released::Go(jobs) => {
                for job in jobs {
                    self.release(job);
                }
            }
            Released::Expired(jobs) => {
                let waited = self.shared.config.retry_max_elapsed;
                for mut job in jobs {
                    job.last_status = attempt.and_then(Attempt::status);
                    job.last_message = Some(format!(
                        "its trace was not stored within {waited:?} (retry_max_elapsed) of \
                         its 202; the server's last answer: {}",
                        attempt.map(Attempt::message).unwrap_or_default()
                    ));
                    self.settle(job, Some(DropReason::RetriesExhausted), now);
                }
            }
            Released::Waiting => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn answered(status: u16, message: &str) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: None,
            message: message.into(),
            detail: true,
        }
    }

    #[test]
    fn answers_mean_stored_not_yet_pause_or_cannot_tell() {
        assert_eq!(readiness(&answered(200, "")), Readiness::Stored);
        assert_eq!(readiness(&answered(201, "")), Readiness::Stored);
        let missing = "Trace 0d7c… not found.";
        assert_eq!(readiness(&answered(404, missing)), Readiness::NotYet);
        assert_eq!(readiness(&answered(503, "")), Readiness::NotYet);
        let failed = Attempt::Failed {
            ambiguous: true,
            message: "reset".into(),
        };
        assert_eq!(readiness(&failed), Readiness::NotYet);
        assert_eq!(
            readiness(&answered(429, "")),
            Readiness::Paused(RATE_LIMITED_PAUSE)
        );
        let told = Attempt::Answered {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            message: String::new(),
            detail: false,
        };
        assert_eq!(readiness(&told), Readiness::Paused(Duration::from_secs(2)));
        for (status, message) in [(404, "Not Found"), (405, ""), (401, ""), (422, "")] {
            assert_eq!(
                readiness(&answered(status, message)),
                Readiness::Unknowable,
                "{status}"
            );
        }
    }

    fn span(name: &str, input: Option<serde_json::Value>) -> crate::trace_data::SpanData {
        let mut span = crate::trace_data::SpanData::new(
            Uuid::new_v4(),
            None,
            name.into(),
            crate::SpanKind::Tool,
        );
        span.input = input;
        span
    }

    #[test]
    fn small_traces_are_asked_with_get_big_ones_by_their_smallest_span() {
        let mut trace = TraceData {
            trace_id: Uuid::new_v4(),
            name: "t".into(),
            status: crate::TraceStatus::Completed,
            started_at: SystemTime::UNIX_EPOCH,
            ended_at: None,
            input: None,
            output: None,
            metadata: None,
            session_id: None,
            user_id: None,
            tags: Vec::new(),
            spans: Vec::new(),
        };
        assert_eq!(probe_for(&trace, 300), ProbeRequest::Get);
        let big = serde_json::json!("x".repeat(10_000));
        trace.spans.push(span("big", Some(big.clone())));
        trace.spans.push(span("small", None));
        let ProbeRequest::Span(body) = probe_for(&trace, 20_000) else {
            panic!("a span probe");
        };
        let sent: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(sent[0]["name"], "small");
        assert_eq!(sent.as_array().map(Vec::len), Some(1));
        trace.spans.pop();
        assert_eq!(
            probe_for(&trace, 20_000),
            ProbeRequest::Get,
            "no small span"
        );
    }
}
