//! What the layer keeps in a marked span's extensions: the PandaProbe trace or span it became,
//! and what its fields add up to so far (metadata and token counts arrive one field at a time,
//! but the SDK's setters take them whole).

use serde_json::{Map, Value};
use uuid::Uuid;

use super::field_values::FieldValues;
use super::fields::{map_field, Mapped, Role, TokenCount};
use super::gen_ai::{gen_ai_kind, span_name, GEN_AI_REQUEST_MODEL, GEN_AI_TOOL_NAME};
use crate::token_usage::TokenUsage;
use crate::trace::{Span, SpanKind, SpanStatus, Trace, TraceStatus};

/// The error text of a span that was open while its thread panicked.
const PANICKED: &str = "panicked";

enum Target {
    Trace(Trace),
    Span(Span),
}

/// A marked span, as one layer made it.
pub(super) struct Node {
    /// The layer that made it: another layer in the same subscriber leaves it alone.
    owner: u64,
    target: Target,
    metadata: Map<String, Value>,
    usage: TokenUsage,
    model_parameters: Map<String, Value>,
    failed: bool,
    /// The GenAI operation of a span taken for its GenAI fields (no mark): it is renamed by
    /// its tool or model when they are recorded after it opened, and ends `OK` (see `close`).
    gen_ai: Option<String>,
    /// An answer was recorded: output, token counts or a `gen_ai.response.*` field.
    answered: bool,
    /// Fields the table does not name are the input (a span marked by the user, most often
    /// an `#[instrument]`ed function and its arguments), until an `input` field is recorded.
    fields_as_input: bool,
    /// Those fields, as the input object so far.
    arguments: Map<String, Value>,
}

impl Node {
    pub(super) fn trace(owner: u64, trace: Trace) -> Node {
        Node::new(owner, Target::Trace(trace))
    }

    pub(super) fn span(owner: u64, span: Span) -> Node {
        Node::new(owner, Target::Span(span))
    }

    fn new(owner: u64, target: Target) -> Node {
        Node {
            owner,
            target,
            metadata: Map::new(),
            usage: TokenUsage::default(),
            model_parameters: Map::new(),
            failed: false,
            gen_ai: None,
            answered: false,
            fields_as_input: false,
            arguments: Map::new(),
        }
    }

    /// Marks the node as a GenAI span of `operation`.
    pub(super) fn with_gen_ai(mut self, operation: Option<&str>) -> Node {
        self.gen_ai = operation.map(str::to_owned);
        self
    }

    /// Takes the fields the table does not name as the input (see `fields_as_input`).
    pub(super) fn with_fields_as_input(mut self, fields_as_input: bool) -> Node {
        self.fields_as_input = fields_as_input;
        self
    }

    pub(super) fn is_owned_by(&self, owner: u64) -> bool {
        self.owner == owner
    }

    pub(super) fn trace_id(&self) -> Uuid {
        match &self.target {
            Target::Trace(trace) => trace.trace_id(),
            Target::Span(span) => span.trace_id(),
        }
    }

    /// The trace, when this node is one.
    pub(super) fn as_trace(&self) -> Option<&Trace> {
        match &self.target {
            Target::Trace(trace) => Some(trace),
            Target::Span(_) => None,
        }
    }

    /// Opens a span under this one.
    pub(super) fn child(&self, name: &str, kind: SpanKind) -> Span {
        match &self.target {
            Target::Trace(trace) => trace.span(name, kind),
            Target::Span(span) => span.span(name, kind),
        }
    }

    /// Applies recorded fields, at creation or from `Span::record`.
    pub(super) fn record(&mut self, values: FieldValues) {
        let role = match self.target {
            Target::Trace(_) => Role::Trace,
            Target::Span(_) => Role::Span,
        };
        let (mut metadata_changed, mut tokens_changed, mut parameters_changed) =
            (false, false, false);
        let mut arguments_changed = false;
        for (name, value) in values.0 {
            if let (Some(operation), Target::Span(span)) = (&self.gen_ai, &self.target) {
                let text = || value.clone().into_text();
                let renamed = match name {
                    GEN_AI_TOOL_NAME => span_name(operation, Some(&text()), None, None),
                    GEN_AI_REQUEST_MODEL => span_name(operation, None, None, Some(&text())),
                    _ => None,
                };
                if let Some(renamed) = renamed {
                    span.set_name(renamed);
                }
            }
            self.answered |= name.starts_with("gen_ai.response.");
            let Some(mapped) = map_field(name, value, role) else {
                continue;
            };
            match (&self.target, mapped) {
                (_, Mapped::Other(key, value)) if self.fields_as_input => {
                    self.arguments.insert(key.to_owned(), value);
                    arguments_changed = true;
                }
                (_, Mapped::Metadata(key, value) | Mapped::Other(key, value)) => {
                    self.metadata.insert(key.to_owned(), value);
                    metadata_changed = true;
                }
                (_, Mapped::Input(v)) if self.fields_as_input => {
                    // An explicit input wins; the fields taken as input so far are kept as
                    // metadata, and later ones go there too.
                    self.fields_as_input = false;
                    arguments_changed = false;
                    if !self.arguments.is_empty() {
                        self.metadata.append(&mut self.arguments);
                        metadata_changed = true;
                    }
                    self.set_input(v);
                }
                (_, Mapped::Tokens(count, n)) => {
                    self.answered = true;
                    let usage = &mut self.usage;
                    match count {
                        TokenCount::Prompt => usage.prompt_tokens = n,
                        TokenCount::Completion => usage.completion_tokens = n,
                        TokenCount::Reasoning => usage.reasoning_tokens = Some(n),
                        TokenCount::CacheRead => usage.cache_read_tokens = Some(n),
                        TokenCount::CacheCreation => usage.cache_creation_tokens = Some(n),
                    }
                    tokens_changed = true;
                }
                (_, Mapped::Error(error)) => self.fail(error),
                (_, Mapped::ModelParameter(key, value)) => {
                    self.model_parameters.insert(key.to_owned(), value);
                    parameters_changed = true;
                }
                (_, Mapped::Input(v)) => self.set_input(v),
                (Target::Trace(t), Mapped::Output(v)) => t.set_output(v),
                (Target::Trace(t), Mapped::SessionId(id)) => t.set_session_id(id),
                (Target::Trace(t), Mapped::UserId(id)) => t.set_user_id(id),
                (Target::Trace(t), Mapped::Tags(tags)) => {
                    tags.into_iter().for_each(|tag| t.add_tag(tag))
                }
                (Target::Span(s), Mapped::Output(v)) => {
                    self.answered = true;
                    s.set_output(v);
                }
                (Target::Span(s), Mapped::Model(model)) => s.set_model(model),
                (Target::Span(s), Mapped::Cost(cost)) => s.set_cost(cost),
                // `map_field` sends these to metadata for the other role.
                (Target::Trace(_), Mapped::Model(_) | Mapped::Cost(_))
                | (Target::Span(_), Mapped::SessionId(_) | Mapped::UserId(_) | Mapped::Tags(_)) => {
                }
            }
        }
        if arguments_changed {
            self.set_input(Value::Object(self.arguments.clone()));
        }
        if metadata_changed {
            self.flush_metadata();
        }
        if let (true, Target::Span(span)) = (parameters_changed, &self.target) {
            span.set_model_parameters(Value::Object(self.model_parameters.clone()));
        }
        if tokens_changed {
            if let Target::Span(span) = &self.target {
                span.set_usage(self.usage);
            }
        }
    }

    fn set_input(&self, input: Value) {
        match &self.target {
            Target::Trace(trace) => trace.set_input(input),
            Target::Span(span) => span.set_input(input),
        }
    }

    fn flush_metadata(&self) {
        let metadata = Value::Object(self.metadata.clone());
        match &self.target {
            Target::Trace(trace) => trace.set_metadata(metadata),
            Target::Span(span) => span.set_metadata(metadata),
        }
    }

    /// Status ERROR; a trace, which has no error field, keeps the text as `metadata.error`.
    pub(super) fn fail(&mut self, error: Option<String>) {
        self.failed = true;
        match (&self.target, error) {
            (Target::Span(span), Some(error)) => span.set_error(error),
            (Target::Span(span), None) => span.set_status(SpanStatus::Error),
            (Target::Trace(trace), error) => {
                trace.set_status(TraceStatus::Error);
                if let Some(error) = error {
                    self.metadata
                        .insert("error".to_owned(), Value::String(error));
                    self.flush_metadata();
                }
            }
        }
    }

    /// A panic went through the span: status ERROR, unless an error was recorded already.
    pub(super) fn fail_on_panic(&mut self) {
        if !self.failed {
            self.fail(Some(PANICKED.to_owned()));
        }
    }

    /// Ends the span, or ends and queues the trace.
    ///
    /// The GenAI conventions record errors only, so a GenAI span that closes without one is
    /// `OK`; a model call only if an answer was recorded too, since an emitter may record
    /// nothing at all for a failed one (rig 0.44 does not), and that span stays `UNSET`.
    pub(super) fn close(self) {
        match self.target {
            Target::Trace(trace) => trace.end(),
            Target::Span(span) => {
                let model_call = self
                    .gen_ai
                    .as_deref()
                    .map(gen_ai_kind)
                    .is_some_and(|kind| matches!(kind, SpanKind::Llm | SpanKind::Embedding));
                if self.gen_ai.is_some() && !self.failed && (self.answered || !model_call) {
                    span.set_status(SpanStatus::Ok);
                }
                span.end()
            }
        }
    }
}
