//! Traces: the handle users hold while their agent runs. Ending a trace (or dropping its last
//! handle) queues one `POST /traces` with every span embedded, followed by the scores made
//! through it.

mod error_text;
mod sanitize;
mod shared;
mod span;

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use serde_json::Value;
use uuid::Uuid;

use crate::error::ScoreError;
use crate::producer::Producer;
use crate::score::Score;

use crate::trace_data::{as_object, merge_object, not_null, TraceData};
pub use crate::trace_data::{SpanKind, SpanStatus, TraceStatus, MAX_SPANS_PER_REQUEST};
use shared::{EndOnDrop, OpenTrace, TraceShared};
pub use span::Span;
pub(crate) use span::WeakSpan;

/// Starts a trace with options; from [`Client::trace`](crate::Client::trace).
///
/// ```
/// use pandaprobe::Client;
/// use serde_json::json;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder().enabled(false).build()?;
/// let trace = client
///     .trace("support-agent")
///     .session_id("session-42")
///     .user_id("user-7")
///     .tags(["beta"])
///     .input(json!({"messages": [{"role": "user", "content": "hi"}]}))
///     .start();
/// trace.end();
/// # Ok(()) }
/// ```
#[must_use = "call .start() to open the trace"]
pub struct TraceBuilder {
    producer: Option<Producer>,
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
    pub(crate) fn new(producer: Option<Producer>, name: String) -> TraceBuilder {
        TraceBuilder {
            producer,
            trace_id: None,
            name,
            session_id: None,
            user_id: None,
            tags: Vec::new(),
            input: None,
            metadata: None,
        }
    }

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

    /// Starts the clock and returns the trace's handle.
    pub fn start(self) -> Trace {
        let trace_id = self.trace_id.unwrap_or_else(Uuid::new_v4);
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
            tags: self.tags,
            spans: Vec::new(),
        };
        if let Some(producer) = &self.producer {
            producer.trace_opened(trace_id);
        }
        let open = self.producer.is_some().then_some(OpenTrace {
            data,
            scores: Vec::new(),
        });
        let shared = Arc::new(TraceShared {
            producer: self.producer,
            trace_id,
            open: Mutex::new(open),
        });
        Trace {
            handle: Arc::new(EndOnDrop(shared)),
        }
    }
}

/// A trace that may have ended: what the thread-local current trace holds, so that a guard
/// dropped out of order can never keep a trace open (and unsent) for the thread's life.
#[derive(Clone)]
pub(crate) struct WeakTrace {
    trace_id: Uuid,
    handle: Weak<EndOnDrop>,
}

impl WeakTrace {
    pub(crate) fn trace_id(&self) -> Uuid {
        self.trace_id
    }

    /// The trace, while a handle to it is alive.
    pub(crate) fn upgrade(&self) -> Option<Trace> {
        self.handle.upgrade().map(|handle| Trace { handle })
    }
}

/// An open trace. Ending it ([`Trace::end`], or dropping its last handle) queues it, with all
/// its spans, as one request; a span still open then ends with it. A trace whose last handle
/// is dropped during a panic is sent with status [`TraceStatus::Error`].
///
/// `Clone + Send + Sync`: clones are handles to the same trace, so it can be shared between
/// tasks and threads and ended from any of them, once. Setters take `&self`.
///
/// Limits, applied when the trace is sent, so that the server never rejects it: names are cut
/// to 512 characters (an empty name becomes `"unnamed"`), session id, user id, environment,
/// release and model to 255; NUL characters, which the
/// server cannot store, become U+FFFD, counted in [`Stats::nul_replaced`](crate::Stats::nul_replaced).
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
///
/// let shared = trace.clone(); // e.g. moved into another task
/// std::thread::spawn(move || shared.end()).join().expect("ended");
/// trace.end(); // already ended: does nothing
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "a trace ends when its last handle is dropped"]
pub struct Trace {
    handle: Arc<EndOnDrop>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("trace_id", &self.trace_id())
            .finish_non_exhaustive()
    }
}

impl Trace {
    fn shared(&self) -> &Arc<TraceShared> {
        &self.handle.0
    }

    /// The trace's id: what scores refer to.
    pub fn trace_id(&self) -> Uuid {
        self.shared().trace_id
    }

    /// Sets the input.
    pub fn set_input(&self, input: Value) {
        self.shared().update(|d| d.input = not_null(input));
    }

    /// Sets the output.
    pub fn set_output(&self, output: Value) {
        self.shared().update(|d| d.output = not_null(output));
    }

    /// Sets the metadata: a JSON object (`null` means none; anything else is kept under `"value"`).
    pub fn set_metadata(&self, metadata: Value) {
        self.shared().update(|d| d.metadata = as_object(metadata));
    }

    /// Adds the keys of `metadata` to the trace's, replacing those it has (the Python SDK's
    /// `set_metadata`); [`Trace::set_metadata`] replaces the whole object.
    pub fn merge_metadata(&self, metadata: Value) {
        self.shared()
            .update(|d| merge_object(&mut d.metadata, metadata));
    }

    /// Sets the status (default [`TraceStatus::Completed`]).
    pub fn set_status(&self, status: TraceStatus) {
        self.shared().update(|d| d.status = status);
    }

    /// Sets the session id.
    pub fn set_session_id(&self, id: impl Into<String>) {
        self.shared().update(|d| d.session_id = Some(id.into()));
    }

    /// Sets the user id.
    pub fn set_user_id(&self, id: impl Into<String>) {
        self.shared().update(|d| d.user_id = Some(id.into()));
    }

    /// Adds a tag; a tag the trace already has is not added again (the server keeps a set),
    /// so a loop that tags the trace holds one copy.
    pub fn add_tag(&self, tag: impl Into<String>) {
        let tag = tag.into();
        self.shared().update(|d| {
            if !d.tags.contains(&tag) {
                d.tags.push(tag);
            }
        });
    }

    /// Opens a span at the top of the trace.
    pub fn span(&self, name: impl Into<String>, kind: SpanKind) -> Span {
        Span::open(self.shared(), None, name.into(), kind)
    }

    /// Opens a span under the span with id `parent` (for instrumentation that keeps span ids
    /// rather than [`Span`] handles).
    pub fn span_with_parent(
        &self,
        parent: Option<Uuid>,
        name: impl Into<String>,
        kind: SpanKind,
    ) -> Span {
        Span::open(self.shared(), parent, name.into(), kind)
    }

    /// Scores this trace: the score's trace id is replaced by this trace's. The score is
    /// validated now; while the trace is open it waits with it, and it is sent once the server
    /// has stored the trace (the server refuses scores for traces it has not stored). After
    /// the trace has ended this is the same as [`Client::score`](crate::Client::score).
    ///
    /// # Errors
    ///
    /// As [`Client::score`](crate::Client::score): the score breaks a rule of the server; the byte budget has no
    /// room for it ([`ScoreError::QueueBytesFull`]: it is charged from this call on, since it
    /// is held with the trace); or (after the trace ended) the queue is full or the client is
    /// shut down.
    pub fn score(&self, mut score: Score) -> Result<(), ScoreError> {
        let shared = self.shared();
        score.set_trace_id(shared.trace_id);
        score.validate()?;
        {
            let mut guard = shared.lock();
            if let Some(open) = guard.as_mut() {
                if let Some(producer) = &shared.producer {
                    let charge = producer.hold_score(&mut score)?;
                    open.scores.push((score, charge));
                }
                return Ok(());
            }
        }
        match &shared.producer {
            Some(producer) => producer.score(score),
            None => Ok(()),
        }
    }

    /// Ends the trace now and queues it; later calls, from any clone, do nothing. Dropping the
    /// last handle does the same.
    pub fn end(&self) {
        self.shared().end(false);
    }

    /// A reference that does not keep the trace open, for the thread's current trace.
    pub(crate) fn downgrade(&self) -> WeakTrace {
        WeakTrace {
            trace_id: self.trace_id(),
            handle: Arc::downgrade(&self.handle),
        }
    }

    /// A span that ends this trace when it ends ([`Client::span`](crate::Client::span)
    /// outside any trace).
    pub(crate) fn into_owning_span(self, name: String, kind: SpanKind) -> Span {
        Span::owning(self.handle, name, kind)
    }
}
