//! Traces and spans: the guards users hold while their agent runs. Ending a trace (or dropping
//! its guard) queues one `POST /traces` with every span embedded, followed by the scores made
//! through it.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::Value;
use uuid::Uuid;

use crate::body::trace_body;
use crate::client::Client;
use crate::error::ScoreError;
use crate::record::{Record, TraceRecord};
use crate::score::Score;

/// The most spans the server takes in one trace; later spans are left out and counted.
pub const MAX_SPANS_PER_TRACE: usize = 500;

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
    /// Finished with an error.
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
    /// Failed.
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

/// Everything recorded about one trace until it ends.
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
    pub(crate) environment: Option<String>,
    pub(crate) release: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) spans: Vec<SpanData>,
    /// Spans left out because the trace already had [`MAX_SPANS_PER_TRACE`].
    spans_over_limit: u64,
    /// Scores made through the trace, validated and counted, sent after it.
    scores: Vec<Score>,
    ended: bool,
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

struct TraceShared {
    client: Client,
    trace_id: Uuid,
    data: Mutex<TraceData>,
}

impl TraceShared {
    fn lock(&self) -> MutexGuard<'_, TraceData> {
        self.data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends the trace once: open spans end with it, and one record is queued.
    fn end(&self) {
        let record = {
            let mut data = self.lock();
            if data.ended {
                return;
            }
            data.ended = true;
            let now = SystemTime::now();
            data.ended_at.get_or_insert(now);
            for span in &mut data.spans {
                span.ended_at.get_or_insert(now);
            }
            if data.spans_over_limit > 0 {
                tracing::warn!(
                    target: "pandaprobe",
                    trace_id = %data.trace_id,
                    "trace had more than {MAX_SPANS_PER_TRACE} spans; {} were left out",
                    data.spans_over_limit
                );
                self.client.spans_dropped(data.spans_over_limit);
            }
            Record::Trace(Box::new(TraceRecord {
                trace_id: data.trace_id,
                body: trace_body(&data),
                scores: std::mem::take(&mut data.scores),
            }))
        };
        self.client.enqueue_trace(record);
    }
}

/// Metadata must be a JSON object on the wire: `null` means none (the server answers a `null`
/// with a 422), anything else is kept under `"value"`.
fn as_object(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(_) => Some(value),
        other => Some(serde_json::json!({ "value": other })),
    }
}

/// `null` means "not set": absent keys are omitted, never sent as `null`.
fn not_null(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        value => Some(value),
    }
}

/// Starts a trace with options; from [`Client::trace`].
#[must_use = "call .start() to open the trace"]
pub struct TraceBuilder {
    client: Client,
    trace_id: Option<Uuid>,
    name: String,
    session_id: Option<String>,
    user_id: Option<String>,
    tags: Vec<String>,
    input: Option<Value>,
    metadata: Option<Value>,
}

impl fmt::Debug for TraceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceBuilder")
            .field("name", &self.name)
            .field("trace_id", &self.trace_id)
            .finish_non_exhaustive()
    }
}

impl TraceBuilder {
    /// Uses this id instead of a fresh UUID (re-sending an id updates the stored trace).
    pub fn trace_id(mut self, id: Uuid) -> Self {
        self.trace_id = Some(id);
        self
    }

    /// Groups this trace with others of the same session.
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// The end user this trace served.
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Tags, added to any already given.
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// The trace's input, e.g. `{"messages":[{"role":"user","content":"hi"}]}`.
    pub fn input(mut self, input: Value) -> Self {
        self.input = not_null(input);
        self
    }

    /// Metadata: a JSON object (`null` means none; anything else is kept under `"value"`).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = as_object(metadata);
        self
    }

    /// Starts the clock and returns the trace's guard.
    pub fn start(self) -> Trace {
        let trace_id = self.trace_id.unwrap_or_else(Uuid::new_v4);
        let (environment, release) = self.client.environment_and_release();
        let data = TraceData {
            trace_id,
            name: self.name,
            status: TraceStatus::Completed,
            started_at: SystemTime::now(),
            ended_at: None,
            input: self.input,
            output: None,
            metadata: self.metadata,
            session_id: self.session_id,
            user_id: self.user_id,
            environment: environment.map(str::to_owned),
            release: release.map(str::to_owned),
            tags: self.tags,
            spans: Vec::new(),
            spans_over_limit: 0,
            scores: Vec::new(),
            ended: false,
        };
        Trace {
            shared: Arc::new(TraceShared {
                client: self.client,
                trace_id,
                data: Mutex::new(data),
            }),
        }
    }
}

impl Client {
    /// A builder for a trace with options (session, user, tags, input, metadata).
    pub fn trace(&self, name: impl Into<String>) -> TraceBuilder {
        TraceBuilder {
            client: self.clone(),
            trace_id: None,
            name: name.into(),
            session_id: None,
            user_id: None,
            tags: Vec::new(),
            input: None,
            metadata: None,
        }
    }

    /// Starts a trace named `name` with a fresh UUID; score it with its
    /// [`trace_id`](Trace::trace_id).
    pub fn start_trace(&self, name: impl Into<String>) -> Trace {
        self.trace(name).start()
    }
}

/// An open trace. Ending it ([`Trace::end`] or dropping the guard) queues it, with all its
/// spans, as one request; a span still open then ends with it.
///
/// `Send + Sync`: it can cross `.await` points and threads. Setters take `&self`.
///
/// Limits, applied when the trace is sent, so that the server never rejects it: names are cut
/// to 512 characters (an empty name becomes `"unnamed"`), session id, user id, environment,
/// release and model to 255; spans beyond [`MAX_SPANS_PER_TRACE`] are left out, logged and
/// counted in [`Stats::spans_dropped`](crate::Stats::spans_dropped).
///
/// ```
/// use pandaprobe::{Client, Score, SpanKind};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder().enabled(false).build()?;
/// let trace = client.start_trace("my-agent");
/// let span = trace.span("llm-call", SpanKind::Llm);
/// span.set_model("gpt-x");
/// span.set_token_usage(3, 5);
/// span.end();
/// trace.score(Score::numeric(trace.trace_id(), "relevance", 0.9))?;
/// trace.end();
/// # Ok(()) }
/// ```
pub struct Trace {
    shared: Arc<TraceShared>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("trace_id", &self.shared.trace_id)
            .finish_non_exhaustive()
    }
}

impl Trace {
    /// The trace's id: what scores refer to.
    pub fn trace_id(&self) -> Uuid {
        self.shared.trace_id
    }

    fn update(&self, f: impl FnOnce(&mut TraceData)) {
        let mut data = self.shared.lock();
        if !data.ended {
            f(&mut data);
        }
    }

    /// Sets the input.
    pub fn set_input(&self, input: Value) {
        self.update(|d| d.input = not_null(input));
    }

    /// Sets the output.
    pub fn set_output(&self, output: Value) {
        self.update(|d| d.output = not_null(output));
    }

    /// Sets the metadata: a JSON object (`null` means none; anything else is kept under `"value"`).
    pub fn set_metadata(&self, metadata: Value) {
        self.update(|d| d.metadata = as_object(metadata));
    }

    /// Sets the status (default [`TraceStatus::Completed`]).
    pub fn set_status(&self, status: TraceStatus) {
        self.update(|d| d.status = status);
    }

    /// Sets the session id.
    pub fn set_session_id(&self, id: impl Into<String>) {
        self.update(|d| d.session_id = Some(id.into()));
    }

    /// Sets the user id.
    pub fn set_user_id(&self, id: impl Into<String>) {
        self.update(|d| d.user_id = Some(id.into()));
    }

    /// Adds a tag.
    pub fn add_tag(&self, tag: impl Into<String>) {
        self.update(|d| d.tags.push(tag.into()));
    }

    /// Opens a span at the top of the trace.
    pub fn span(&self, name: impl Into<String>, kind: SpanKind) -> Span {
        Span::open(&self.shared, None, name.into(), kind)
    }

    /// Scores this trace: the score's trace id is replaced by this trace's. The score is
    /// validated now; it is sent after the trace, once the server has stored the trace (the
    /// server refuses scores for traces it has not stored). After the trace has ended this is
    /// the same as [`Client::score`].
    pub fn score(&self, mut score: Score) -> Result<(), ScoreError> {
        score.set_trace_id(self.shared.trace_id);
        score.validate()?;
        {
            let mut data = self.shared.lock();
            if !data.ended {
                if self.shared.client.is_enabled() {
                    self.shared.client.accept_held(1);
                    data.scores.push(score);
                }
                return Ok(());
            }
        }
        self.shared.client.score(score)
    }

    /// Ends the trace now and queues it. Dropping the guard does the same.
    pub fn end(self) {
        self.shared.end();
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        self.shared.end();
    }
}

/// An open span. Ending it ([`Span::end`] or dropping the guard) stamps its end time; it is sent
/// with its trace. Setters take `&self`; after the trace has ended they do nothing.
pub struct Span {
    trace: Arc<TraceShared>,
    span_id: Uuid,
    /// Position in the trace's span list; `None` when the trace was over its span limit.
    index: Option<usize>,
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("span_id", &self.span_id)
            .field("trace_id", &self.trace.trace_id)
            .finish_non_exhaustive()
    }
}

impl Span {
    fn open(trace: &Arc<TraceShared>, parent: Option<Uuid>, name: String, kind: SpanKind) -> Span {
        let span_id = Uuid::new_v4();
        let mut data = trace.lock();
        let index = if data.ended {
            None
        } else if data.spans.len() >= MAX_SPANS_PER_TRACE {
            data.spans_over_limit += 1;
            None
        } else {
            data.spans.push(SpanData {
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
            });
            Some(data.spans.len() - 1)
        };
        drop(data);
        Span {
            trace: Arc::clone(trace),
            span_id,
            index,
        }
    }

    fn update(&self, f: impl FnOnce(&mut SpanData)) {
        let Some(index) = self.index else {
            return;
        };
        let mut data = self.trace.lock();
        if data.ended {
            return;
        }
        if let Some(span) = data.spans.get_mut(index) {
            f(span);
        }
    }

    /// The span's id.
    pub fn span_id(&self) -> Uuid {
        self.span_id
    }

    /// The id of the trace this span belongs to.
    pub fn trace_id(&self) -> Uuid {
        self.trace.trace_id
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

    /// Sets the model name.
    pub fn set_model(&self, model: impl Into<String>) {
        self.update(|s| s.model = Some(model.into()));
    }

    /// Sets the token usage as `{"prompt_tokens": …, "completion_tokens": …, "total_tokens": …}`.
    pub fn set_token_usage(&self, prompt_tokens: u64, completion_tokens: u64) {
        self.update(|s| {
            s.token_usage = Some(serde_json::json!({
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }))
        });
    }

    /// Sets the cost as `{"total": …}` (non-finite numbers are left out).
    pub fn set_cost(&self, total: f64) {
        if let Some(n) = serde_json::Number::from_f64(total) {
            self.update(|s| s.cost = Some(serde_json::json!({ "total": n })));
        }
    }

    /// Sets the model parameters, e.g. `{"temperature": 0.2}`.
    pub fn set_model_parameters(&self, parameters: Value) {
        self.update(|s| s.model_parameters = as_object(parameters));
    }

    /// Marks the moment the first token of a completion arrived.
    pub fn set_completion_start(&self) {
        self.update(|s| s.completion_start_time = Some(SystemTime::now()));
    }

    /// Sets the metadata: a JSON object (`null` means none; anything else is kept under `"value"`).
    pub fn set_metadata(&self, metadata: Value) {
        self.update(|s| s.metadata = as_object(metadata));
    }

    /// Records an error and sets the status to [`SpanStatus::Error`].
    pub fn set_error(&self, error: impl Into<String>) {
        self.update(|s| {
            s.error = Some(error.into());
            s.status = SpanStatus::Error;
        });
    }

    /// Sets the status.
    pub fn set_status(&self, status: SpanStatus) {
        self.update(|s| s.status = status);
    }

    /// Ends the span now. Dropping the guard does the same.
    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        self.update(|s| {
            s.ended_at.get_or_insert_with(SystemTime::now);
        });
    }
}
