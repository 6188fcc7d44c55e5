//! The `tracing` layer: marked spans in, PandaProbe traces and spans out. What a user needs to
//! know is on [`TracingLayer`]; `fields` holds the mapping table as code, `node` what a marked
//! span keeps, `open_roots` the traces not closed yet.

mod field_values;
mod fields;
mod gen_ai;
mod node;
mod open_roots;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, Registry};
use uuid::Uuid;

use self::field_values::{ErrorMessage, FieldValues};
use self::fields::{KIND_MARK, TRACE_MARK};
use self::gen_ai::{
    gen_ai_kind, span_name, GEN_AI_AGENT_NAME, GEN_AI_OPERATION, GEN_AI_REQUEST_MODEL,
    GEN_AI_TOOL_NAME,
};
use self::node::Node;
use self::open_roots::OpenRoots;
use crate::client::Client;
use crate::producer::Producer;
use crate::trace::{Span, SpanKind, TraceBuilder};

/// How long a trace may stay open before [`TracingLayer`] ends it: one hour.
pub const DEFAULT_MAX_TRACE_DURATION: Duration = Duration::from_secs(3600);

type Selector = Arc<dyn Fn(&Metadata<'_>) -> bool + Send + Sync>;

/// A [`tracing_subscriber::Layer`] that turns the `tracing` spans you mark into PandaProbe traces
/// and spans. Add it to a [`tracing_subscriber::Registry`], then mark spans with fields:
///
/// | field | becomes |
/// |---|---|
/// | `pandaprobe.trace` | the span is a **trace**, named by the field's value if it is a string, else by the span's name (inside another trace it is a span of that trace) |
/// | `pandaprobe.kind` | the span, inside a trace, is a **span** of it, under the nearest marked span; the value names the [`SpanKind`] (`"llm"`, `"tool"`, any case; unknown: `OTHER`) |
/// | `gen_ai.operation.name` (OpenTelemetry GenAI conventions, as rig emits them) | the span is taken without a mark (see [`gen_ai`](Self::gen_ai)): `chat` → LLM, `execute_tool` → TOOL, `invoke_agent` → AGENT, `embeddings` → EMBEDDING; outside a trace it opens one, named by `gen_ai.agent.name`. Inside a trace a tool span is named by `gen_ai.tool.name`, an agent span by its agent, a model call `{operation} {gen_ai.request.model}` (`chat gpt-4o`); it is `OK` when it closes without an error |
/// | `model`, `gen_ai.request.model`, `gen_ai.response.model` | span: `model` |
/// | `gen_ai.input.messages` | `input`: the conventions' `[{role, parts}]` become `{"messages": [{role, content, tool_calls}]}`, tool results `tool` messages (as the LLM-client crates record them); a message with a part of another type keeps the whole value as it is |
/// | `gen_ai.output.messages` | `output`: the assistant message, converted the same way |
/// | `gen_ai.prompt`, `gen_ai.tool.call.arguments` | `input` (JSON parsed as below) |
/// | `gen_ai.completion`, `gen_ai.tool.call.result` | `output` |
/// | `gen_ai.request.temperature`, `max_tokens`, `top_p`, `top_k`, `frequency_penalty`, `presence_penalty`, `seed` | span: `model_parameters` (`temperature`, …) |
/// | `prompt_tokens`, `gen_ai.usage.input_tokens` | span: `token_usage.prompt_tokens` |
/// | `completion_tokens`, `gen_ai.usage.output_tokens` | span: `token_usage.completion_tokens` |
/// | `reasoning_tokens`, `gen_ai.usage.reasoning_tokens` (rig), `gen_ai.usage.reasoning.output_tokens` | span: `token_usage.reasoning_tokens` |
/// | `cache_read_tokens`, `gen_ai.usage.cache_read.input_tokens` | span: `token_usage.cache_read_tokens` |
/// | `cache_creation_tokens`, `gen_ai.usage.cache_creation.input_tokens` | span: `token_usage.cache_creation_tokens` |
/// | `cost` (a number) | span: `cost.total` |
/// | `input`, `output` | `input`, `output`; text holding a JSON object or array is parsed, anything else is kept as it is |
/// | `session_id`, `user_id` | trace: `session_id`, `user_id` |
/// | `tags` | trace: `tags`, split at commas |
/// | `error` | status `ERROR`, with the value as the span's `error` (a trace's `metadata.error`); `false` means no error |
/// | `error.type`, `gen_ai.tool.error.type` (the conventions' error class) | status `ERROR`, with the class as the error |
/// | any other field, on a span you marked | a key of `input`, as Python's `@trace`/`@span` record a function's arguments (`#[instrument]` records them as fields); once an `input` field is recorded, that is the input and these fields go to `metadata` |
/// | any other field, on a span taken by a selector or for its GenAI fields; `gen_ai.*` fields the table does not read; `otel.*` hints | a key of `metadata` |
/// | `metadata.<key>` | `metadata.<key>`, on any span |
/// | the span-only fields of a trace, the trace-only fields of a span, counts or costs that are not numbers | a key of `metadata` |
///
/// A span that is neither marked, nor a GenAI span, nor selected by [`root_if`](Self::root_if) or
/// [`span_if`](Self::span_if) is ignored, as is a span marked `pandaprobe.kind` outside any
/// trace: the spans of other libraries never become traces unless you select them.
///
/// - **Timing:** a trace or span starts when its `tracing` span is created and ends when it
///   closes (when its last handle is dropped and its child spans have closed); the trace is
///   then queued with its spans.
/// - **Fields** count when the span is created and when recorded later (`Span::record`); the
///   marks are read at creation only.
/// - **Errors:** besides an `error` field, an ERROR-level event marks the nearest marked span
///   (or trace) `ERROR`, with the event's `error` field, else its message, as the error text;
///   this covers `#[instrument(err)]`. The event of `#[instrument(ret)]` (a `return` field)
///   sets the nearest marked span's `output` (parsed as JSON like `output`: `ret` records
///   `Debug` unless you write `ret(Display)`). A span left by a panic (exited or closed while its
///   thread unwinds) is `ERROR` too, with the text `"panicked"` unless an error was recorded.
/// - **Never closed:** a trace whose root span is still open [`max_trace_duration`] after it
///   started is ended and queued as it is (its open spans ending with it) as soon as another
///   root span opens; closing it later changes nothing. Dropping the subscriber ends every
///   trace still open.
/// - **Non-blocking:** the layer only calls the SDK's non-blocking API (short locks, no I/O;
///   with [`QueueFullPolicy::Block`](crate::QueueFullPolicy::Block), a root span's close waits
///   as that policy says when the queue is full) and never panics.
/// - [`current_trace_id`](crate::current_trace_id) returns the trace of the current span.
///
/// Spans disabled by a filter never reach the layer: put level filters on your output layers
/// (per-layer filters), or keep marked spans at a level that is enabled. Use one
/// layer per subscriber; a second one ignores the spans the first has taken.
///
/// [`max_trace_duration`]: Self::max_trace_duration
///
/// ```
/// use std::time::Duration;
/// use pandaprobe::{Client, Score, TracingLayer};
/// use tracing_subscriber::prelude::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = pandaprobe_testing::TestServer::builder().lenient().start()?;
/// let client = Client::builder()
///     .api_key("sk_pp_test")
///     .project_name("my-project")
/// #   .endpoint(server.url())
///     .build()?;
/// let subscriber = tracing_subscriber::registry().with(TracingLayer::new(client.clone()));
///
/// tracing::subscriber::with_default(subscriber, || {
///     let run = tracing::info_span!("run", pandaprobe.trace = "support-agent", user_id = "u-7");
///     let _run = run.enter();
///     let llm = tracing::info_span!(
///         "answer",
///         pandaprobe.kind = "llm",
///         model = "gpt-x",
///         prompt_tokens = 12,
///         completion_tokens = tracing::field::Empty,
///     );
///     llm.in_scope(|| {
///         tracing::Span::current().record("completion_tokens", 30); // recorded later counts
///     });
///
///     let trace_id = pandaprobe::current_trace_id().expect("inside the trace");
///     client.score(Score::numeric(trace_id, "helpfulness", 0.9))
/// })?;
///
/// client.flush(Duration::from_secs(10))?; // the trace (one LLM span) and its score
/// # assert_eq!(server.traces()[0].body["spans"][0]["token_usage"]["completion_tokens"], 30);
/// # Ok(()) }
/// ```
///
/// Selecting spans you do not write, such as tower-http's `request` span:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let client = pandaprobe::Client::builder().enabled(false).build()?;
/// let layer = pandaprobe::TracingLayer::new(client)
///     .root_if(|meta| meta.target() == "tower_http::trace::make_span" && meta.name() == "request")
///     .span_if(|meta| meta.target().starts_with("my_agent::tools"));
/// # drop(layer);
/// # Ok(()) }
/// ```
#[must_use = "add the layer to a subscriber"]
pub struct TracingLayer {
    /// The queue's producer side, not a [`Client`]: a layer (in a global subscriber, never
    /// dropped) does not keep the worker alive, and dropping it never runs a shutdown.
    producer: Option<Producer>,
    /// Tells this layer's nodes from another layer's in the same registry.
    id: u64,
    root_if: Option<Selector>,
    span_if: Option<Selector>,
    /// Takes GenAI spans (`gen_ai.operation.name`) without a mark.
    gen_ai: bool,
    open: Mutex<OpenRoots>,
}

impl fmt::Debug for TracingLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingLayer")
            .field("enabled", &self.producer.is_some())
            .field("root_if", &self.root_if.is_some())
            .field("span_if", &self.span_if.is_some())
            .finish_non_exhaustive()
    }
}

impl TracingLayer {
    /// A layer that sends its traces through `client`'s queue. Only marked spans are recorded
    /// (see [`TracingLayer`]); open traces end after [`DEFAULT_MAX_TRACE_DURATION`].
    ///
    /// The layer does not own the client: keep a [`Client`] handle (or the guard of
    /// [`init`](crate::init)) for as long as traces should be delivered, and shut it down (or
    /// drop the last handle) before the process exits, as with any client. Traces that end
    /// after that are counted as dropped (`shutdown`) and handed to the drop hook.
    pub fn new(client: Client) -> TracingLayer {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        TracingLayer {
            producer: client.producer().cloned(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            root_if: None,
            span_if: None,
            gen_ai: true,
            open: Mutex::new(OpenRoots::new(DEFAULT_MAX_TRACE_DURATION)),
        }
    }

    /// Also makes a trace of every span that `select` picks, when it is outside any trace (the
    /// span's name names the trace; inside a trace it becomes a span of it). Default: none;
    /// a later call replaces the earlier selector.
    pub fn root_if<F>(mut self, select: F) -> Self
    where
        F: Fn(&Metadata<'_>) -> bool + Send + Sync + 'static,
    {
        self.root_if = Some(Arc::new(select));
        self
    }

    /// Also makes a span of every span that `select` picks inside a trace, of kind `OTHER`
    /// unless it has a `pandaprobe.kind` field. Default: none; a later call replaces the
    /// earlier selector.
    pub fn span_if<F>(mut self, select: F) -> Self
    where
        F: Fn(&Metadata<'_>) -> bool + Send + Sync + 'static,
    {
        self.span_if = Some(Arc::new(select));
        self
    }

    /// Whether spans that follow the OpenTelemetry GenAI conventions (they carry
    /// `gen_ai.operation.name`, as rig's agent, model and tool spans do) are taken without a
    /// mark: inside a trace as spans (`chat` → LLM, `execute_tool` → TOOL, `invoke_agent` →
    /// AGENT, `embeddings` → EMBEDDING), outside any as a trace (named by
    /// `gen_ai.agent.name`, else the span). Default `true`.
    pub fn gen_ai(mut self, take: bool) -> Self {
        self.gen_ai = take;
        self
    }

    /// How long a trace may stay open: a trace whose root span has not closed this long after
    /// it opened is ended and queued as it is when the next root span opens. Default
    /// [`DEFAULT_MAX_TRACE_DURATION`]; `Duration::MAX` keeps traces open until their spans
    /// close.
    pub fn max_trace_duration(self, max: Duration) -> Self {
        *lock(&self.open) = OpenRoots::new(max);
        self
    }

    fn owns(&self, node: &Node) -> bool {
        node.is_owned_by(self.id)
    }

    /// Runs `f` on this layer's node of span `id`, if it has one.
    fn with_node<S>(&self, id: &Id, ctx: &Context<'_, S>, f: impl FnOnce(&mut Node))
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if let Some(span) = ctx.span(id) {
            if let Some(node) = span.extensions_mut().get_mut::<Node>() {
                if self.owns(node) {
                    f(node);
                }
            }
        }
    }
}

impl<S> Layer<S> for TracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let selected = |selector: &Option<Selector>| selector.as_ref().is_some_and(|f| f(meta));
        let gen_ai = self.gen_ai && meta.fields().field(GEN_AI_OPERATION).is_some();
        let trace_mark = meta.fields().field(TRACE_MARK).is_some();
        let kind_mark = meta.fields().field(KIND_MARK).is_some();
        let is_root = trace_mark || selected(&self.root_if) || gen_ai;
        let is_span = kind_mark || selected(&self.span_if) || gen_ai;
        if !is_root && !is_span {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        if span.extensions().get::<Node>().is_some() {
            return; // another layer took it
        }
        let mut values = FieldValues::default();
        attrs.record(&mut values);
        let agent = gen_ai.then(|| values.text(GEN_AI_AGENT_NAME)).flatten();
        let name = values.text(TRACE_MARK).or(agent).unwrap_or(meta.name());
        let operation = gen_ai.then(|| values.text(GEN_AI_OPERATION)).flatten();
        let kind = match values.text(KIND_MARK).and_then(SpanKind::from_name) {
            Some(kind) => kind,
            None => operation.map(gen_ai_kind).unwrap_or_default(),
        };
        // Inside a trace, a GenAI span is named as the conventions name it; a trace it opens
        // keeps the agent's name.
        let span_name = operation
            .and_then(|operation| {
                span_name(
                    operation,
                    values.text(GEN_AI_TOOL_NAME),
                    agent,
                    values.text(GEN_AI_REQUEST_MODEL),
                )
            })
            .unwrap_or_else(|| name.to_owned());

        // The child is opened while the parent's extensions are read-locked: the SDK logs
        // nothing there, so no hook can re-enter that lock.
        let child = span.parent().and_then(|parent| {
            parent.scope().find_map(|ancestor| {
                let extensions = ancestor.extensions();
                let node = extensions.get::<Node>()?;
                Some(self.owns(node).then(|| node.child(&span_name, kind)))
            })
        });
        let node = match child {
            Some(Some(child)) => Node::span(self.id, child),
            // The nearest marked ancestor belongs to another layer.
            Some(None) => return,
            None if is_root => {
                let trace = TraceBuilder::new(self.producer.clone(), name.to_owned()).start();
                let expired = lock(&self.open).opened(&trace, Instant::now());
                expired.iter().for_each(crate::trace::Trace::end);
                Node::trace(self.id, trace)
            }
            None => return,
        };
        // The user's own marks take the unnamed fields as the input; spans taken by a
        // selector (other code's) or for their GenAI fields keep them as metadata.
        let mut node = node
            .with_gen_ai(operation)
            .with_fields_as_input((trace_mark || kind_mark) && operation.is_none());
        node.record(values);
        span.extensions_mut().replace(node);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let marked = ctx.span(id).is_some_and(|span| {
            span.extensions()
                .get::<Node>()
                .is_some_and(|node| self.owns(node))
        });
        if marked {
            // Visited before locking: formatting a value runs the caller's code.
            let mut fields = FieldValues::default();
            values.record(&mut fields);
            self.with_node(id, &ctx, |node| node.record(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            // `#[instrument(ret)]`'s event: the value the function returned is the nearest
            // marked span's output.
            if event.metadata().fields().field("return").is_none() {
                return;
            }
            let mut values = FieldValues::default();
            event.record(&mut values);
            let (Some(output), Some(span)) = (values.returned(), ctx.event_span(event)) else {
                return;
            };
            for ancestor in span.scope() {
                let mut extensions = ancestor.extensions_mut();
                if let Some(node) = extensions.get_mut::<Node>() {
                    if self.owns(node) {
                        node.record(output);
                    }
                    return;
                }
            }
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut message = ErrorMessage::default();
        event.record(&mut message);
        let mut message = Some(message.into_text());
        for ancestor in span.scope() {
            let mut extensions = ancestor.extensions_mut();
            if let Some(node) = extensions.get_mut::<Node>() {
                if self.owns(node) {
                    node.fail(message.take().flatten());
                }
                return;
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        // A panic unwinding through `span.enter()` (or an instrumented future's poll) exits
        // the span; tokio drops a panicked task's future later, outside the panic.
        if std::thread::panicking() {
            self.with_node(id, &ctx, Node::fail_on_panic);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let node = {
            let mut extensions = span.extensions_mut();
            if !extensions
                .get_mut::<Node>()
                .is_some_and(|node| self.owns(node))
            {
                return;
            }
            extensions.remove::<Node>()
        };
        // Ended outside the extensions' lock: ending a trace may log.
        if let Some(mut node) = node {
            if std::thread::panicking() {
                node.fail_on_panic();
            }
            if let Some(trace) = node.as_trace() {
                lock(&self.open).closed(trace.trace_id());
            }
            node.close();
        }
    }
}

fn lock(open: &Mutex<OpenRoots>) -> MutexGuard<'_, OpenRoots> {
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The trace of the current `tracing` span or its nearest marked ancestor, when the current
/// subscriber is a [`Registry`] with a [`TracingLayer`].
pub(crate) fn current_span_trace_id() -> Option<Uuid> {
    with_nearest_node(Node::trace_id)
}

/// A new span under the nearest `tracing` span this layer recorded (for [`Client::span`]).
///
/// [`Client::span`]: crate::Client::span
pub(crate) fn current_span_child(name: &str, kind: SpanKind) -> Option<Span> {
    with_nearest_node(|node| node.child(name, kind))
}

/// `f` on the node of the current `tracing` span or of its nearest recorded ancestor.
fn with_nearest_node<R>(f: impl Fn(&Node) -> R) -> Option<R> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            let found = span
                .scope()
                .find_map(|s| s.extensions().get::<Node>().map(&f));
            found
        })
        .flatten()
}
