//! What a trace and its spans record until the trace ends, and the enums the wire knows.

use std::time::SystemTime;

use serde_json::Value;
use uuid::Uuid;

use crate::budget::Charge;
use crate::score::Score;

/// The most spans the server takes in one request. A trace may have any number: the first
/// this many go with the trace, the rest in requests of this many once it is stored.
pub const MAX_SPANS_PER_REQUEST: usize = 500;

/// A trace's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TraceStatus {
    /// Not started yet.
    Pending,
    /// Still running.
    Running,
    /// Finished normally. The default.
    #[default]
    Completed,
    /// Finished with an error. A trace whose last handle is dropped while its thread panics
    /// ends with this status.
    Error,
}

impl TraceStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TraceStatus::Pending => "PENDING",
            TraceStatus::Running => "RUNNING",
            TraceStatus::Completed => "COMPLETED",
            TraceStatus::Error => "ERROR",
        }
    }
}

/// What a span does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SpanKind {
    /// An agent step.
    Agent,
    /// A tool call.
    Tool,
    /// A language-model call.
    Llm,
    /// A retrieval.
    Retriever,
    /// A chain of steps.
    Chain,
    /// An embedding call.
    Embedding,
    /// Anything else. The default.
    #[default]
    Other,
}

impl SpanKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SpanKind::Agent => "AGENT",
            SpanKind::Tool => "TOOL",
            SpanKind::Llm => "LLM",
            SpanKind::Retriever => "RETRIEVER",
            SpanKind::Chain => "CHAIN",
            SpanKind::Embedding => "EMBEDDING",
            SpanKind::Other => "OTHER",
        }
    }

    /// The kind named by its wire name in any case (`"llm"`, `"TOOL"`), or `None`.
    pub fn from_name(name: &str) -> Option<SpanKind> {
        [
            SpanKind::Agent,
            SpanKind::Tool,
            SpanKind::Llm,
            SpanKind::Retriever,
            SpanKind::Chain,
            SpanKind::Embedding,
            SpanKind::Other,
        ]
        .into_iter()
        .find(|k| name.eq_ignore_ascii_case(k.as_str()))
    }
}

/// A span's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SpanStatus {
    /// Not set. The default.
    #[default]
    Unset,
    /// Succeeded.
    Ok,
    /// Failed. A span dropped while its thread panics ends with this status.
    Error,
}

impl SpanStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Unset => "UNSET",
            SpanStatus::Ok => "OK",
            SpanStatus::Error => "ERROR",
        }
    }
}

/// Everything recorded about one trace until it ends; the worker serializes it.
pub(crate) struct TraceData {
    pub(crate) trace_id: Uuid,
    pub(crate) name: String,
    pub(crate) status: TraceStatus,
    pub(crate) started_at: SystemTime,
    pub(crate) ended_at: Option<SystemTime>,
    pub(crate) input: Option<Value>,
    pub(crate) output: Option<Value>,
    pub(crate) metadata: Option<Value>,
    pub(crate) session_id: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) spans: Vec<SpanData>,
}

/// Everything recorded about one span.
pub(crate) struct SpanData {
    pub(crate) span_id: Uuid,
    pub(crate) parent_span_id: Option<Uuid>,
    pub(crate) name: String,
    pub(crate) kind: SpanKind,
    pub(crate) status: SpanStatus,
    pub(crate) input: Option<Value>,
    pub(crate) output: Option<Value>,
    pub(crate) model: Option<String>,
    pub(crate) token_usage: Option<Value>,
    pub(crate) metadata: Option<Value>,
    pub(crate) started_at: SystemTime,
    pub(crate) ended_at: Option<SystemTime>,
    pub(crate) error: Option<String>,
    pub(crate) completion_start_time: Option<SystemTime>,
    pub(crate) model_parameters: Option<Value>,
    pub(crate) cost: Option<Value>,
}

impl SpanData {
    pub(crate) fn new(span_id: Uuid, parent: Option<Uuid>, name: String, kind: SpanKind) -> Self {
        SpanData {
            span_id,
            parent_span_id: parent,
            name,
            kind,
            status: SpanStatus::Unset,
            input: None,
            output: None,
            model: None,
            token_usage: None,
            metadata: None,
            started_at: SystemTime::now(),
            ended_at: None,
            error: None,
            completion_start_time: None,
            model_parameters: None,
            cost: None,
        }
    }
}

/// An ended trace on its way to the worker, with the scores made through it while it was open:
/// they wait for it, since the server refuses scores for traces it has not stored.
pub(crate) struct EndedTrace {
    pub(crate) data: TraceData,
    /// Validated scores, already counted as accepted, each with its charge.
    pub(crate) scores: Vec<(Score, Charge)>,
}

/// Metadata must be a JSON object on the wire: `null` means none (the server answers a `null`
/// with a 422), anything else is kept under `"value"`.
pub(crate) fn as_object(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(_) => Some(value),
        other => Some(serde_json::json!({ "value": other })),
    }
}

/// Merges `value` (taken as [`as_object`] takes it) into the object in `slot`: its keys are
/// added or replace the ones there, the others stay.
pub(crate) fn merge_object(slot: &mut Option<Value>, value: Value) {
    match (slot.as_mut(), as_object(value)) {
        (Some(Value::Object(existing)), Some(Value::Object(new))) => existing.extend(new),
        (_, Some(new)) => *slot = Some(new),
        (_, None) => {}
    }
}

/// `null` means "not set": absent keys are omitted, never sent as `null`.
pub(crate) fn not_null(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        value => Some(value),
    }
}
