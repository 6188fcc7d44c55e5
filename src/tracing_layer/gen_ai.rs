//! The OpenTelemetry GenAI semantic conventions, as far as the layer reads them without a mark
//! (rig and other crates emit them): which spans are GenAI spans, and their kind. The fields'
//! mapping is in `fields`, with the rest of the table.

use serde_json::{Map, Value};

use crate::trace::SpanKind;

/// The OpenTelemetry GenAI conventions' operation (`chat`, `execute_tool`, `invoke_agent`, …):
/// a span that has it is a GenAI span (rig and others emit them), taken without a mark.
pub(super) const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
/// Names the trace a GenAI agent span opens.
pub(super) const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
/// Names a tool span; rig records it after the span opens, so the span is renamed then.
pub(super) const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
/// The model a GenAI span asks for.
pub(super) const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";

/// The name of a GenAI span inside a trace, from what it has when it opens: a tool by its
/// name, an agent by its name, a model call as the conventions name it (`chat gpt-4o`); `None`
/// keeps the span's own name.
pub(super) fn span_name(
    operation: &str,
    tool: Option<&str>,
    agent: Option<&str>,
    model: Option<&str>,
) -> Option<String> {
    match gen_ai_kind(operation) {
        SpanKind::Tool => tool.map(str::to_owned),
        SpanKind::Agent => agent.map(str::to_owned),
        _ => model.map(|model| format!("{operation} {model}")),
    }
}

/// GenAI input messages (`[{"role", "parts": [...]}]`) in PandaProbe's convention:
/// `{"messages": [{"role", "content", "tool_calls"}]}`, tool results as `tool` messages. Any
/// other value is kept as it is.
pub(super) fn input_messages(value: Value) -> Value {
    match convert(value) {
        Ok(messages) => Value::Object(Map::from_iter([(
            "messages".to_owned(),
            Value::Array(messages),
        )])),
        Err(value) => value,
    }
}

/// GenAI output messages in the convention: the one assistant message (a list when there are
/// several), `finish_reason` kept on it. Any other value is kept as it is.
pub(super) fn output_messages(value: Value) -> Value {
    match convert(value) {
        Ok(mut messages) if messages.len() == 1 => messages.pop().unwrap_or(Value::Null),
        Ok(messages) => Value::Array(messages),
        Err(value) => value,
    }
}

/// The messages converted, or the value back when it is not a list of GenAI messages whose
/// parts are all of a type this knows (text, reasoning, tool call, tool response): nothing is
/// dropped in the conversion.
fn convert(value: Value) -> Result<Vec<Value>, Value> {
    let known = |message: &Value| {
        message["role"].is_string()
            && message["parts"].as_array().is_some_and(|parts| {
                parts.iter().all(|part| {
                    matches!(
                        part["type"].as_str(),
                        Some("text" | "reasoning" | "tool_call" | "tool_call_response")
                    )
                })
            })
    };
    match value {
        Value::Array(messages) if !messages.is_empty() && messages.iter().all(known) => {
            let mut out = Vec::with_capacity(messages.len());
            for message in messages {
                convert_message(message, &mut out);
            }
            Ok(out)
        }
        other => Err(other),
    }
}

fn convert_message(message: Value, out: &mut Vec<Value>) {
    let Value::Object(mut message) = message else {
        return;
    };
    let parts = match message.remove("parts") {
        Some(Value::Array(parts)) => parts,
        _ => Vec::new(),
    };
    let (mut text, mut reasoning) = (String::new(), String::new());
    let (mut calls, mut responses) = (Vec::new(), Vec::new());
    for part in parts {
        match part["type"].as_str() {
            Some("text") => text.push_str(part["content"].as_str().unwrap_or_default()),
            Some("reasoning") => reasoning.push_str(part["content"].as_str().unwrap_or_default()),
            Some("tool_call") => calls.push(serde_json::json!({
                "id": part["id"],
                "type": "function",
                "function": {"name": part["name"], "arguments": as_text(&part["arguments"])},
            })),
            _ => responses.push(serde_json::json!({
                "role": "tool",
                "tool_call_id": part["id"],
                "content": as_text(&part["response"]),
            })),
        }
    }
    if !text.is_empty() || !calls.is_empty() || !reasoning.is_empty() || responses.is_empty() {
        let content = if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        };
        message.insert("content".to_owned(), content);
        if !calls.is_empty() {
            message.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        if !reasoning.is_empty() {
            message.insert("reasoning_content".to_owned(), Value::String(reasoning));
        }
        out.push(Value::Object(message));
    }
    out.extend(responses);
}

/// A string as it is, anything else as its JSON text (OpenAI's `arguments` and tool `content`
/// are text).
fn as_text(value: &Value) -> Value {
    match value {
        Value::String(_) => value.clone(),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    }
}

/// The span kind of a GenAI operation.
pub(super) fn gen_ai_kind(operation: &str) -> SpanKind {
    match operation {
        "chat" | "text_completion" | "generate_content" => SpanKind::Llm,
        "embeddings" => SpanKind::Embedding,
        "execute_tool" => SpanKind::Tool,
        "invoke_agent" | "create_agent" => SpanKind::Agent,
        _ => SpanKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spans_are_named_by_tool_agent_or_operation_and_model() {
        assert_eq!(
            span_name("execute_tool", Some("get_weather"), None, None),
            Some("get_weather".to_owned())
        );
        assert_eq!(span_name("execute_tool", None, Some("a"), Some("m")), None);
        assert_eq!(
            span_name("chat", None, Some("agent"), Some("gpt-4o")),
            Some("chat gpt-4o".to_owned())
        );
        assert_eq!(
            span_name("invoke_agent", None, Some("agent"), Some("m")),
            Some("agent".to_owned())
        );
        assert_eq!(span_name("chat", None, None, None), None);
    }

    #[test]
    fn genai_messages_become_the_convention() {
        let input = json!([
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Weather?"}]},
            {"role": "assistant", "parts": [
                {"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}},
            ]},
            {"role": "user", "parts": [
                {"type": "tool_call_response", "id": "c1", "response": {"celsius": 18}},
            ]},
        ]);
        assert_eq!(
            input_messages(input),
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{
                    "id": "c1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                }]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"celsius\":18}"},
            ]})
        );
        let output = json!([{"role": "assistant", "finish_reason": "stop", "parts": [
            {"type": "reasoning", "content": "Easy."},
            {"type": "text", "content": "Sunny."},
        ]}]);
        assert_eq!(
            output_messages(output),
            json!({"role": "assistant", "finish_reason": "stop", "content": "Sunny.",
                   "reasoning_content": "Easy."})
        );
    }

    #[test]
    fn anything_else_is_kept_as_it_is() {
        for value in [
            json!("What is the weather?"),
            json!([]),
            json!([{"role": "user", "content": "already the convention"}]),
            json!([{"role": "user", "parts": [{"type": "blob", "content": "aGk="}]}]),
            json!({"messages": []}),
        ] {
            assert_eq!(input_messages(value.clone()), value);
            assert_eq!(output_messages(value.clone()), value);
        }
    }

    #[test]
    fn operations_name_the_span_kind() {
        for (operation, kind) in [
            ("chat", SpanKind::Llm),
            ("execute_tool", SpanKind::Tool),
            ("invoke_agent", SpanKind::Agent),
            ("embeddings", SpanKind::Embedding),
            ("something_new", SpanKind::Other),
        ] {
            assert_eq!(gen_ai_kind(operation), kind, "{operation}");
        }
    }
}
