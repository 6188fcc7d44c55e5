//! One record in the worker's hands: serialized once, with its retry state and what the last
//! attempt said.

use bytes::Bytes;
use reqwest::header::HeaderValue;
use tokio::time::Instant;
use uuid::Uuid;

use super::retry::RetryState;
use super::transport::Attempt;
use crate::budget::Charge;
use crate::drop_event::{DropEvent, DropReason, RecordKind};
use crate::text::Text;

/// A plain carrier: the worker's parts read and update it as the record moves.
pub(super) struct Job {
    pub(super) kind: RecordKind,
    /// Its position in the queue, for the flush barrier.
    pub(super) seq: u64,
    pub(super) trace_id: Uuid,
    /// The score's or the trace's name, for drop reports.
    pub(super) name: Text,
    pub(super) body: Bytes,
    /// The same on every attempt, so a server log can tie retries together.
    pub(super) request_id: HeaderValue,
    pub(super) retry: RetryState,
    /// For the spans of a trace past its first request's (`POST /traces/{id}/spans`): how
    /// many; 0 for a trace or a score.
    pub(super) chunk: usize,
    pub(super) sent_at: Instant,
    /// The last answer's status and message, for drop reports.
    pub(super) last_status: Option<u16>,
    pub(super) last_message: Option<String>,
    /// Its share of the byte budget, given back when the job is dropped, whatever its outcome.
    #[allow(dead_code, reason = "held for its Drop, which gives the bytes back")]
    pub(super) charge: Charge,
}

impl Job {
    pub(super) fn new(
        kind: RecordKind,
        seq: u64,
        trace_id: Uuid,
        name: Text,
        body: Vec<u8>,
        charge: Charge,
        now: Instant,
    ) -> Job {
        Job {
            kind,
            seq,
            trace_id,
            name,
            body: Bytes::from(body),
            request_id: request_id(),
            retry: RetryState::default(),
            chunk: 0,
            sent_at: now,
            last_status: None,
            last_message: None,
            charge,
        }
    }

    /// Keeps what an attempt said, for a later drop report.
    pub(super) fn note(&mut self, attempt: &Attempt) {
        self.last_status = attempt.status();
        self.last_message = Some(attempt.message().to_owned());
    }

    pub(super) fn drop_event(&self, reason: DropReason) -> DropEvent {
        DropEvent::new(self.kind, reason, self.trace_id, self.name.as_str())
            .with_answer(self.last_status, self.last_message.clone())
    }
}

/// A new `X-Request-Id`, so that a server log can tie a request's attempts together.
pub(super) fn request_id() -> HeaderValue {
    HeaderValue::from_str(
        Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    )
    .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
