//! What a span's fields become: one pure function from a field's name and value to its place in
//! a trace or span (the table in the module docs). The values come from `field_values`.

use serde_json::Value;

use super::field_values::FieldValue;
use super::gen_ai::{input_messages, output_messages};

/// The field that makes a span a trace; a string value names it.
pub(super) const TRACE_MARK: &str = "pandaprobe.trace";
/// The field that makes a span inside a trace one of its spans; the value names the kind.
pub(super) const KIND_MARK: &str = "pandaprobe.kind";

/// What the marked span is in PandaProbe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Trace,
    Span,
}

/// Where one field goes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Mapped {
    Model(String),
    /// A token count of a span's `token_usage`.
    Tokens(TokenCount, u64),
    Cost(f64),
    Input(Value),
    Output(Value),
    SessionId(String),
    UserId(String),
    Tags(Vec<String>),
    /// A request parameter of a GenAI span (`gen_ai.request.temperature` → `temperature`).
    ModelParameter(&'static str, Value),
    /// Status ERROR, with the error's text when there is one.
    Error(Option<String>),
    Metadata(&'static str, Value),
    /// A field the table does not name: on a marked span, one of the input's fields (a
    /// function's argument, as `#[instrument]` records it); elsewhere, metadata.
    Other(&'static str, Value),
}

/// Which count of [`TokenUsage`](crate::TokenUsage) a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenCount {
    Prompt,
    Completion,
    Reasoning,
    CacheRead,
    CacheCreation,
}

/// The plain names the table maps for one role only (a trace's or a span's).
const ROLE_FIELDS: [&str; 10] = [
    "model",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost",
    "session_id",
    "user_id",
    "tags",
];

/// The table of the module docs. `None`: the field is a mark, or says "no error".
pub(super) fn map_field(name: &'static str, value: FieldValue, role: Role) -> Option<Mapped> {
    let mapped = match (name, role) {
        (TRACE_MARK | KIND_MARK, _) => return None,
        ("input", _) => Mapped::Input(parse_json(value)),
        ("output", _) => Mapped::Output(parse_json(value)),
        ("error", _) => match value {
            FieldValue::Bool(false) => return None,
            FieldValue::Bool(true) => Mapped::Error(None),
            FieldValue::Text(s) if s.is_empty() => Mapped::Error(None),
            other => Mapped::Error(Some(other.into_text())),
        },
        ("model" | "gen_ai.request.model" | "gen_ai.response.model", Role::Span) => {
            Mapped::Model(value.into_text())
        }
        // The GenAI conventions' content (recorded when the emitter's content capture is on).
        ("gen_ai.input.messages", _) => Mapped::Input(input_messages(parse_json(value))),
        ("gen_ai.output.messages", _) => Mapped::Output(output_messages(parse_json(value))),
        ("gen_ai.prompt" | "gen_ai.tool.call.arguments", _) => Mapped::Input(parse_json(value)),
        ("gen_ai.completion" | "gen_ai.tool.call.result", _) => Mapped::Output(parse_json(value)),
        // The conventions' error class (`error.type`), and rig's for a failed tool call.
        ("error.type" | "gen_ai.tool.error.type", _) => Mapped::Error(Some(value.into_text())),
        (
            "gen_ai.request.temperature"
            | "gen_ai.request.max_tokens"
            | "gen_ai.request.top_p"
            | "gen_ai.request.top_k"
            | "gen_ai.request.frequency_penalty"
            | "gen_ai.request.presence_penalty"
            | "gen_ai.request.seed",
            Role::Span,
        ) => Mapped::ModelParameter(
            name.strip_prefix("gen_ai.request.").unwrap_or(name),
            value.into_json(),
        ),
        ("prompt_tokens" | "gen_ai.usage.input_tokens", Role::Span) => {
            tokens(TokenCount::Prompt, name, value)
        }
        ("completion_tokens" | "gen_ai.usage.output_tokens", Role::Span) => {
            tokens(TokenCount::Completion, name, value)
        }
        // rig's name, then the conventions' newer one.
        (
            "reasoning_tokens"
            | "gen_ai.usage.reasoning_tokens"
            | "gen_ai.usage.reasoning.output_tokens",
            Role::Span,
        ) => tokens(TokenCount::Reasoning, name, value),
        ("cache_read_tokens" | "gen_ai.usage.cache_read.input_tokens", Role::Span) => {
            tokens(TokenCount::CacheRead, name, value)
        }
        ("cache_creation_tokens" | "gen_ai.usage.cache_creation.input_tokens", Role::Span) => {
            tokens(TokenCount::CacheCreation, name, value)
        }
        ("cost", Role::Span) => match value.as_number() {
            Some(n) => Mapped::Cost(n),
            None => Mapped::Metadata(name, value.into_json()),
        },
        ("session_id", Role::Trace) => Mapped::SessionId(value.into_text()),
        ("user_id", Role::Trace) => Mapped::UserId(value.into_text()),
        ("tags", Role::Trace) => Mapped::Tags(
            value
                .into_text()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        // A field of the other role, a GenAI attribute this table does not read, or one of
        // tracing-opentelemetry's `otel.*` hints: never a function's argument.
        _ if name.starts_with("gen_ai.")
            || name.starts_with("otel.")
            || ROLE_FIELDS.contains(&name) =>
        {
            Mapped::Metadata(name, value.into_json())
        }
        _ => match name.strip_prefix("metadata.") {
            Some(key) => Mapped::Metadata(key, value.into_json()),
            None => Mapped::Other(name, value.into_json()),
        },
    };
    Some(mapped)
}

/// A count, or (a negative number, text that is not one) metadata rather than lost.
fn tokens(count: TokenCount, name: &'static str, value: FieldValue) -> Mapped {
    match value.as_count() {
        Some(n) => Mapped::Tokens(count, n),
        None => Mapped::Metadata(name, value.into_json()),
    }
}

/// Text holding a JSON object or array is parsed; anything else is kept as it is.
fn parse_json(value: FieldValue) -> Value {
    match value {
        FieldValue::Text(text) => match serde_json::from_str::<Value>(&text) {
            Ok(parsed @ (Value::Object(_) | Value::Array(_))) => parsed,
            _ => Value::String(text),
        },
        other => other.into_json(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tracing_layer::field_values::FieldValues;

    fn text(s: &str) -> FieldValue {
        FieldValue::Text(s.to_owned())
    }

    fn span(name: &'static str, value: FieldValue) -> Option<Mapped> {
        map_field(name, value, Role::Span)
    }

    fn trace(name: &'static str, value: FieldValue) -> Option<Mapped> {
        map_field(name, value, Role::Trace)
    }

    #[test]
    fn marks_are_not_data() {
        assert_eq!(trace(TRACE_MARK, text("agent")), None);
        assert_eq!(span(KIND_MARK, text("llm")), None);
    }

    #[test]
    fn model_under_both_names() {
        assert_eq!(
            span("model", text("gpt-x")),
            Some(Mapped::Model("gpt-x".into()))
        );
        let otel = span("gen_ai.request.model", text("gpt-y"));
        assert_eq!(otel, Some(Mapped::Model("gpt-y".into())));
    }

    #[test]
    fn tokens_under_both_names_from_numbers_or_digits() {
        let prompt = Some(Mapped::Tokens(TokenCount::Prompt, 3));
        assert_eq!(span("prompt_tokens", FieldValue::Uint(3)), prompt);
        let otel_in = span("gen_ai.usage.input_tokens", FieldValue::Int(4));
        assert_eq!(otel_in, Some(Mapped::Tokens(TokenCount::Prompt, 4)));
        let otel_out = span("gen_ai.usage.output_tokens", text(" 5 "));
        assert_eq!(otel_out, Some(Mapped::Tokens(TokenCount::Completion, 5)));
        let completion = span("completion_tokens", FieldValue::Uint(6));
        assert_eq!(completion, Some(Mapped::Tokens(TokenCount::Completion, 6)));
        // Not a count: kept in metadata rather than lost.
        let negative = span("prompt_tokens", FieldValue::Int(-1));
        assert_eq!(negative, Some(Mapped::Metadata("prompt_tokens", json!(-1))));
    }

    #[test]
    fn reasoning_and_cache_counts_under_rigs_and_the_conventions_names() {
        let cases = [
            ("reasoning_tokens", TokenCount::Reasoning),
            ("gen_ai.usage.reasoning_tokens", TokenCount::Reasoning),
            (
                "gen_ai.usage.reasoning.output_tokens",
                TokenCount::Reasoning,
            ),
            ("cache_read_tokens", TokenCount::CacheRead),
            (
                "gen_ai.usage.cache_read.input_tokens",
                TokenCount::CacheRead,
            ),
            ("cache_creation_tokens", TokenCount::CacheCreation),
            (
                "gen_ai.usage.cache_creation.input_tokens",
                TokenCount::CacheCreation,
            ),
        ];
        for (name, count) in cases {
            assert_eq!(
                span(name, FieldValue::Uint(7)),
                Some(Mapped::Tokens(count, 7)),
                "{name}"
            );
        }
        // A trace has no token usage: the count is metadata there.
        let on_trace = map_field("reasoning_tokens", FieldValue::Uint(7), Role::Trace);
        assert_eq!(
            on_trace,
            Some(Mapped::Metadata("reasoning_tokens", json!(7)))
        );
    }

    #[test]
    fn cost_is_a_finite_number() {
        assert_eq!(
            span("cost", FieldValue::Float(0.25)),
            Some(Mapped::Cost(0.25))
        );
        assert_eq!(span("cost", FieldValue::Uint(2)), Some(Mapped::Cost(2.0)));
        assert_eq!(span("cost", text("0.5")), Some(Mapped::Cost(0.5)));
        let nan = span("cost", FieldValue::Float(f64::NAN));
        assert_eq!(nan, Some(Mapped::Metadata("cost", json!("NaN"))));
    }

    #[test]
    fn input_and_output_parse_json_objects_and_arrays_only() {
        let object = span(
            "input",
            text(r#"{"messages":[{"role":"user","content":"hi"}]}"#),
        );
        let expected = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(object, Some(Mapped::Input(expected)));
        assert_eq!(
            trace("output", text("[1,2]")),
            Some(Mapped::Output(json!([1, 2])))
        );
        assert_eq!(
            span("input", text("hello")),
            Some(Mapped::Input(json!("hello")))
        );
        assert_eq!(span("input", text("42")), Some(Mapped::Input(json!("42"))));
        assert_eq!(
            span("output", text("{broken")),
            Some(Mapped::Output(json!("{broken")))
        );
        assert_eq!(
            span("output", FieldValue::Uint(7)),
            Some(Mapped::Output(json!(7)))
        );
    }

    #[test]
    fn gen_ai_content_and_parameters() {
        let messages = text(r#"[{"role":"user","content":"hi"}]"#);
        assert_eq!(
            span("gen_ai.input.messages", messages),
            Some(Mapped::Input(json!([{"role": "user", "content": "hi"}])))
        );
        assert_eq!(
            span("gen_ai.tool.call.result", text("42")),
            Some(Mapped::Output(json!("42")))
        );
        assert_eq!(
            span("gen_ai.request.temperature", FieldValue::Float(0.5)),
            Some(Mapped::ModelParameter("temperature", json!(0.5)))
        );
        assert_eq!(
            trace("gen_ai.request.temperature", FieldValue::Float(0.5)),
            Some(Mapped::Metadata("gen_ai.request.temperature", json!(0.5))),
            "a trace has no model parameters"
        );
    }

    #[test]
    fn trace_fields_on_a_trace_and_metadata_on_a_span() {
        assert_eq!(
            trace("session_id", text("s-1")),
            Some(Mapped::SessionId("s-1".into()))
        );
        assert_eq!(
            trace("user_id", FieldValue::Uint(7)),
            Some(Mapped::UserId("7".into()))
        );
        let tags = trace("tags", text("beta, eu,,fast "));
        assert_eq!(
            tags,
            Some(Mapped::Tags(vec![
                "beta".into(),
                "eu".into(),
                "fast".into()
            ]))
        );
        let on_span = span("session_id", text("s-1"));
        assert_eq!(on_span, Some(Mapped::Metadata("session_id", json!("s-1"))));
        let model_on_trace = trace("model", text("gpt-x"));
        assert_eq!(
            model_on_trace,
            Some(Mapped::Metadata("model", json!("gpt-x")))
        );
    }

    #[test]
    fn error_text_or_flag() {
        assert_eq!(
            span("error", text("timeout")),
            Some(Mapped::Error(Some("timeout".into())))
        );
        assert_eq!(
            trace("error", FieldValue::Bool(true)),
            Some(Mapped::Error(None))
        );
        assert_eq!(span("error", text("")), Some(Mapped::Error(None)));
        assert_eq!(span("error", FieldValue::Bool(false)), None);
    }

    #[test]
    fn anything_else_is_an_other_field_with_its_type_or_metadata_by_prefix() {
        assert_eq!(
            span("attempt", FieldValue::Uint(2)),
            Some(Mapped::Other("attempt", json!(2)))
        );
        let flag = trace("cached", FieldValue::Bool(true));
        assert_eq!(flag, Some(Mapped::Other("cached", json!(true))));
        let uri = trace("metadata.uri", text("/ask?q=1"));
        assert_eq!(uri, Some(Mapped::Metadata("uri", json!("/ask?q=1"))));
        // Fields of the other role, and GenAI attributes, are never arguments.
        let tags = span("tags", text("a"));
        assert_eq!(tags, Some(Mapped::Metadata("tags", json!("a"))));
        let hint = span("otel.kind", text("client"));
        assert_eq!(hint, Some(Mapped::Metadata("otel.kind", json!("client"))));
        let provider = span("gen_ai.provider.name", text("openai"));
        assert_eq!(
            provider,
            Some(Mapped::Metadata("gen_ai.provider.name", json!("openai")))
        );
    }

    #[test]
    fn text_finds_non_empty_strings_only() {
        let values = FieldValues(vec![
            (TRACE_MARK, FieldValue::Bool(true)),
            (KIND_MARK, text("LLM")),
            ("empty", text("")),
        ]);
        assert_eq!(values.text(TRACE_MARK), None);
        assert_eq!(values.text(KIND_MARK), Some("LLM"));
        assert_eq!(values.text("empty"), None);
    }
}
