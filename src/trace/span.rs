//! Spans: the steps of a trace. A span is sent with its trace; ending it stamps its end time.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use serde_json::Value;
use uuid::Uuid;

use super::shared::{EndOnDrop, TraceShared};
use crate::token_usage::TokenUsage;
use crate::trace_data::{
    as_object, merge_object, not_null, SpanData, SpanKind, SpanStatus, TraceStatus,
};

/// An open span. Ending it ([`Span::end`] or dropping it) stamps its end time; it is sent with
/// its trace. Setters take `&self`; after the trace has ended they do nothing. A span dropped
/// during a panic, with no status set, ends with [`SpanStatus::Error`].
///
/// ```
/// use pandaprobe::{Client, SpanKind};
/// use serde_json::json;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder().enabled(false).build()?;
/// let trace = client.start_trace("rag");
/// let retrieve = trace.span("retrieve", SpanKind::Retriever);
/// retrieve.set_output(json!({"documents": 3}));
/// let llm = retrieve.span("answer", SpanKind::Llm); // a child span
/// llm.set_model("gpt-x");
/// llm.set_cost(0.0001);
/// llm.end();
/// retrieve.end();
/// trace.end();
/// # Ok(()) }
/// ```
#[must_use = "a span ends when it is dropped"]
pub struct Span {
    trace: Arc<TraceShared>,
    span_id: Uuid,
    /// Position in the trace's span list; `None` when the trace had ended or was full.
    index: Option<usize>,
    /// The trace this span opened for itself ([`Client::span`](crate::Client::span) outside
    /// any trace): it ends right after the span, as a field dropped after [`Drop::drop`].
    own_trace: Option<Arc<EndOnDrop>>,
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("span_id", &self.span_id)
            .field("trace_id", &self.trace.trace_id())
            .finish_non_exhaustive()
    }
}

impl Span {
    pub(crate) fn open(
        trace: &Arc<TraceShared>,
        parent: Option<Uuid>,
        name: String,
        kind: SpanKind,
    ) -> Span {
        let span_id = Uuid::new_v4();
        let index = trace.add_span(SpanData::new(span_id, parent, name, kind));
        Span {
            trace: Arc::clone(trace),
            span_id,
            index,
            own_trace: None,
        }
    }

    /// A span that ends `trace` when it ends: the trace has this span only, and takes its
    /// error status.
    pub(super) fn owning(trace: Arc<EndOnDrop>, name: String, kind: SpanKind) -> Span {
        let mut span = Span::open(&trace.0, None, name, kind);
        span.own_trace = Some(trace);
        span
    }

    fn update(&self, f: impl FnOnce(&mut SpanData)) {
        let Some(index) = self.index else {
            return;
        };
        self.trace.update(|data| {
            if let Some(span) = data.spans.get_mut(index) {
                f(span);
            }
        });
    }

    /// A handle that opens children of this span while its trace is open, and keeps neither
    /// the span nor the trace alive: what [`Span::enter`] makes current.
    pub(crate) fn downgrade(&self) -> WeakSpan {
        WeakSpan {
            trace: Arc::downgrade(&self.trace),
            trace_id: self.trace.trace_id(),
            span_id: self.span_id,
        }
    }

    /// The span's id.
    pub fn span_id(&self) -> Uuid {
        self.span_id
    }

    /// The id of the trace this span belongs to.
    pub fn trace_id(&self) -> Uuid {
        self.trace.trace_id()
    }

    /// Opens a child span.
    pub fn span(&self, name: impl Into<String>, kind: SpanKind) -> Span {
        Span::open(&self.trace, Some(self.span_id), name.into(), kind)
    }

    /// Sets the input.
    pub fn set_input(&self, input: Value) {
        self.update(|s| s.input = not_null(input));
    }

    /// Sets the output.
    pub fn set_output(&self, output: Value) {
        self.update(|s| s.output = not_null(output));
    }

    /// Renames the span: for a name known only once the work has started (OpenTelemetry's
    /// `update_name`). Cut to 512 characters when sent, like the name given at the start.
    pub fn set_name(&self, name: impl Into<String>) {
        let name = name.into();
        self.update(|s| s.name = name);
    }

    /// Sets the model name.
    pub fn set_model(&self, model: impl Into<String>) {
        self.update(|s| s.model = Some(model.into()));
    }

    /// Sets the token usage as `{"prompt_tokens": …, "completion_tokens": …, "total_tokens": …}`;
    /// [`Span::set_usage`] adds the reasoning and cache counts.
    pub fn set_token_usage(&self, prompt_tokens: u64, completion_tokens: u64) {
        self.set_usage(TokenUsage::new(prompt_tokens, completion_tokens));
    }

    /// Sets the token usage, with the detail counts that are set (see [`TokenUsage`]).
    pub fn set_usage(&self, usage: TokenUsage) {
        self.update(|s| s.token_usage = Some(usage.to_json()));
    }

    /// Sets the cost as `{"total": …}` (non-finite numbers are left out).
    pub fn set_cost(&self, total: f64) {
        if let Some(n) = serde_json::Number::from_f64(total) {
            self.update(|s| s.cost = Some(serde_json::json!({ "total": n })));
        }
    }

    /// Sets the cost as `{"total": …}` with a breakdown beside it, e.g. `[("input", 0.0004),
    /// ("output", 0.0012)]` (the Python SDK's `set_cost(total=…, **extra)`); non-finite
    /// numbers are left out.
    pub fn set_cost_breakdown<K: Into<String>>(
        &self,
        total: f64,
        parts: impl IntoIterator<Item = (K, f64)>,
    ) {
        let finite = |n: f64| serde_json::Number::from_f64(n).map(Value::Number);
        let Some(total) = finite(total) else {
            return;
        };
        let mut cost = serde_json::Map::new();
        for (key, n) in parts {
            if let Some(n) = finite(n) {
                cost.insert(key.into(), n);
            }
        }
        cost.insert("total".to_owned(), total);
        self.update(|s| s.cost = Some(Value::Object(cost)));
    }

    /// Sets the model parameters, e.g. `{"temperature": 0.2}`.
    pub fn set_model_parameters(&self, parameters: Value) {
        self.update(|s| s.model_parameters = as_object(parameters));
    }

    /// Marks the moment the first token of a completion arrived: now.
    pub fn set_completion_start(&self) {
        self.set_completion_start_at(SystemTime::now());
    }

    /// Marks the moment the first token of a completion arrived, measured elsewhere.
    pub fn set_completion_start_at(&self, at: SystemTime) {
        self.update(|s| s.completion_start_time = Some(at));
    }

    /// Sets the metadata: a JSON object (`null` means none; anything else is kept under `"value"`).
    pub fn set_metadata(&self, metadata: Value) {
        self.update(|s| s.metadata = as_object(metadata));
    }

    /// Adds the keys of `metadata` to the span's, replacing those it has (the Python SDK's
    /// `set_metadata`); [`Span::set_metadata`] replaces the whole object.
    pub fn merge_metadata(&self, metadata: Value) {
        self.update(|s| merge_object(&mut s.metadata, metadata));
    }

    /// Records an error and sets the status to [`SpanStatus::Error`].
    ///
    /// The text is kept to 2,000 characters, and words shaped like a key (`sk-…`, `pk-…`,
    /// `key-…`, the word after `Bearer`) are replaced by `[redacted]`: an error is often a
    /// provider's answer, and a provider quotes the key it refused.
    pub fn set_error(&self, error: impl Into<String>) {
        let error = super::error_text::masked(&error.into());
        self.update(|s| {
            s.error = Some(error);
            s.status = SpanStatus::Error;
        });
    }

    /// Sets the status.
    pub fn set_status(&self, status: SpanStatus) {
        self.update(|s| s.status = status);
    }

    /// Ends the span now. Dropping it does the same.
    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let mut failed = false;
        self.update(|s| {
            s.ended_at.get_or_insert_with(SystemTime::now);
            if panicking && s.status == SpanStatus::Unset {
                s.status = SpanStatus::Error;
            }
            failed = s.status == SpanStatus::Error;
        });
        if let (Some(trace), true) = (&self.own_trace, failed) {
            trace.0.update(|d| d.status = TraceStatus::Error);
        }
    }
}

/// A span as the current span of a thread or a future: its ids, and its trace held weakly.
#[derive(Clone)]
pub(crate) struct WeakSpan {
    trace: Weak<TraceShared>,
    trace_id: Uuid,
    span_id: Uuid,
}

impl WeakSpan {
    pub(crate) fn trace_id(&self) -> Uuid {
        self.trace_id
    }

    /// A new child of the span, while its trace's data is alive (after the trace ended, the
    /// child records nothing, as any span of an ended trace).
    pub(crate) fn child(&self, name: &str, kind: SpanKind) -> Option<Span> {
        let trace = self.trace.upgrade()?;
        Some(Span::open(
            &trace,
            Some(self.span_id),
            name.to_owned(),
            kind,
        ))
    }
}
