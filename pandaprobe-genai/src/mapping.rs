//! What goes from a genai request, answer or error into a span's fields. Messages and tool
//! calls are written in the OpenAI chat shape (`role`, `content`, `tool_calls`,
//! `tool_call_id`) whatever the provider, since that is the shape PandaProbe's UI renders.

use genai::adapter::AdapterKind;
use genai::chat::{
    ChatMessage, ChatOptions, ChatRequest, ChatRole, ContentPart, MessageContent, Tool, ToolCall,
    Usage,
};
use genai::embed::{EmbedInput, EmbedOptions};
use genai::{ModelIden, ModelSpec};
use pandaprobe::{Span, TokenUsage};
use serde_json::{json, Map, Value};

/// `ChatOptions` fields recorded as model parameters. An allowlist: an option that might carry
/// user data, a header or a key (`extra_headers`, `extra_body`, `prompt_cache_key`) stays out.
const CHAT_PARAMETERS: &[&str] = &[
    "temperature",
    "max_tokens",
    "top_p",
    "stop_sequences",
    "seed",
    "reasoning_effort",
    "verbosity",
    "service_tier",
    "response_format",
    "tool_choice",
];

/// `EmbedOptions` fields recorded as model parameters.
const EMBED_PARAMETERS: &[&str] = &["dimensions", "encoding_format", "embedding_type"];

/// The model a call asks for, and its provider as far as the name tells; the answer corrects
/// both ([`model_and_provider`]), since a resolver may map the name elsewhere.
pub(crate) fn requested(spec: &ModelSpec) -> (String, Option<&'static str>) {
    match spec {
        ModelSpec::Name(name) => (
            name.to_string(),
            AdapterKind::from_model(name.as_str())
                .ok()
                .map(|kind| kind.as_lower_str()),
        ),
        ModelSpec::Iden(iden) => (iden.model_name.to_string(), Some(provider(iden))),
        ModelSpec::Target(target) => (
            target.model.model_name.to_string(),
            Some(provider(&target.model)),
        ),
    }
}

/// The model that answered, and the adapter that served it.
pub(crate) fn model_and_provider(iden: &ModelIden) -> (String, &'static str) {
    (iden.model_name.to_string(), provider(iden))
}

/// The adapter that served a call, as its lower-case id (`openai`, `anthropic`, `gemini`, ...).
pub(crate) fn provider(iden: &ModelIden) -> &'static str {
    iden.adapter_kind.as_lower_str()
}

/// The allowlisted, non-null, non-empty fields of serialised options, or `None`.
fn picked(options: Option<Value>, allowed: &[&str]) -> Option<Value> {
    let Value::Object(object) = options? else {
        return None;
    };
    let picked: Map<String, Value> = object
        .into_iter()
        .filter(|(key, value)| {
            allowed.contains(&key.as_str())
                && !value.is_null()
                && value.as_array().is_none_or(|a| !a.is_empty())
        })
        .collect();
    (!picked.is_empty()).then_some(Value::Object(picked))
}

/// The model parameters of a chat call.
pub(crate) fn chat_parameters(options: Option<&ChatOptions>) -> Option<Value> {
    picked(
        options.and_then(|o| serde_json::to_value(o).ok()),
        CHAT_PARAMETERS,
    )
}

/// The model parameters of an embeddings call.
pub(crate) fn embed_parameters(options: Option<&EmbedOptions>) -> Option<Value> {
    picked(
        options.and_then(|o| serde_json::to_value(o).ok()),
        EMBED_PARAMETERS,
    )
}

/// The span input of a chat request: `{"messages": [...]}` (the system prompt first), with
/// `"tools"` when it declares any.
pub(crate) fn chat_input(request: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        push_message(&mut messages, message);
    }
    let mut input = Map::new();
    input.insert("messages".to_owned(), Value::Array(messages));
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        input.insert(
            "tools".to_owned(),
            tools.iter().map(tool).collect::<Vec<_>>().into(),
        );
    }
    Value::Object(input)
}

fn role(role: &ChatRole) -> &'static str {
    match role {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
        ChatRole::Tool => "tool",
    }
}

/// One genai message as OpenAI messages: tool responses become one `tool` message each.
fn push_message(out: &mut Vec<Value>, message: &ChatMessage) {
    let responses: Vec<Value> = message
        .content
        .tool_responses()
        .into_iter()
        .map(|r| json!({"role": "tool", "tool_call_id": r.call_id, "content": r.content}))
        .collect();
    let has_rest = message
        .content
        .iter()
        .any(|part| !matches!(part, ContentPart::ToolResponse(_)));
    if has_rest || responses.is_empty() {
        out.push(assistant_like(role(&message.role), &message.content, None));
    }
    out.extend(responses);
}

/// A message with its text as `content` (a list of parts when it has more than text), its tool
/// calls as `tool_calls`, and reasoning, when there is some, as `reasoning_content`.
pub(crate) fn assistant_like(
    role: &str,
    content: &MessageContent,
    reasoning: Option<&str>,
) -> Value {
    let mut message = Map::new();
    message.insert("role".to_owned(), role.into());
    message.insert("content".to_owned(), content_value(content));
    let calls = content.tool_calls();
    if !calls.is_empty() {
        message.insert(
            "tool_calls".to_owned(),
            calls.into_iter().map(tool_call).collect::<Vec<_>>().into(),
        );
    }
    let reasoning = reasoning
        .map(str::to_owned)
        .or_else(|| content.joined_reasoning_content());
    if let Some(reasoning) = reasoning.filter(|r| !r.is_empty()) {
        message.insert("reasoning_content".to_owned(), reasoning.into());
    }
    Value::Object(message)
}

/// Text only: one string. Images and files too: a list of parts, each binary named by its
/// type and name, or its URL, never its bytes (a base64 image is megabytes of nothing to read).
fn content_value(content: &MessageContent) -> Value {
    let binaries = content.binaries();
    if binaries.is_empty() {
        let texts = content.texts();
        return match texts.len() {
            0 => Value::Null,
            _ => texts.concat().into(),
        };
    }
    let parts: Vec<Value> = content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text(text) => Some(json!({"type": "text", "text": text})),
            ContentPart::Binary(binary) => {
                let mut part = json!({"type": "binary", "content_type": binary.content_type});
                if let Some(name) = &binary.name {
                    part["name"] = name.clone().into();
                }
                if let genai::chat::BinarySource::Url(url) = &binary.source {
                    part["url"] = url.clone().into();
                }
                Some(part)
            }
            _ => None,
        })
        .collect();
    Value::Array(parts)
}

/// A tool call in the OpenAI shape: `arguments` is the JSON text of genai's parsed value.
pub(crate) fn tool_call(call: &ToolCall) -> Value {
    let arguments = match &call.fn_arguments {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    json!({
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.fn_name, "arguments": arguments},
    })
}

fn tool(tool: &Tool) -> Value {
    let mut function = Map::new();
    function.insert("name".to_owned(), tool.name.as_str().into());
    if let Some(description) = &tool.description {
        function.insert("description".to_owned(), description.clone().into());
    }
    if let Some(schema) = &tool.schema {
        function.insert("parameters".to_owned(), schema.clone());
    }
    json!({"type": "function", "function": function})
}

/// The input of an embeddings call: the text, or the list of texts.
pub(crate) fn embed_input(input: &EmbedInput) -> Value {
    match input {
        EmbedInput::Single(text) => json!({ "input": text }),
        EmbedInput::Batch(texts) => json!({ "input": texts }),
    }
}

/// The token counts of an answer, when the provider sent any.
pub(crate) fn record_usage(span: &Span, usage: &Usage) {
    if usage.prompt_tokens.is_none() && usage.completion_tokens.is_none() {
        return;
    }
    let count = |n: Option<i32>| n.and_then(|n| u64::try_from(n).ok());
    let mut counts = TokenUsage::new(
        count(usage.prompt_tokens).unwrap_or(0),
        count(usage.completion_tokens).unwrap_or(0),
    );
    if let Some(prompt) = &usage.prompt_tokens_details {
        if let Some(cached) = count(prompt.cached_tokens) {
            counts = counts.with_cache_read_tokens(cached);
        }
        if let Some(written) = count(prompt.cache_creation_tokens) {
            counts = counts.with_cache_creation_tokens(written);
        }
    }
    let completion = usage.completion_tokens_details.as_ref();
    if let Some(reasoning) = completion.and_then(|d| count(d.reasoning_tokens)) {
        counts = counts.with_reasoning_tokens(reasoning);
    }
    span.set_usage(counts);
}

/// The text a span keeps of a genai error. `Span::set_error` bounds it and masks keys; this
/// leaves out what genai's own message would add: the whole request payload (the prompt, even
/// with content capture off) of an answer it could not read.
pub(crate) fn error_text(error: &genai::Error) -> String {
    match error {
        genai::Error::ChatResponseGeneration {
            model_iden, cause, ..
        } => format!("could not read the answer of model '{model_iden}': {cause}"),
        other => other.to_string(),
    }
}

/// `metadata` for a span: the provider, then whatever else is known.
pub(crate) fn metadata(
    provider: Option<&str>,
    extra: impl IntoIterator<Item = (&'static str, Value)>,
) -> Value {
    let mut map = Map::new();
    if let Some(provider) = provider {
        map.insert("provider".to_owned(), provider.into());
    }
    for (key, value) in extra {
        if !value.is_null() {
            map.insert(key.to_owned(), value);
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use genai::chat::{Binary, BinarySource, ToolResponse};

    #[test]
    fn only_allowlisted_set_options_are_parameters() {
        let options = ChatOptions::default()
            .with_temperature(0.2)
            .with_max_tokens(64)
            .with_capture_usage(true)
            .with_extra_body(json!({"user": "alice"}));
        assert_eq!(
            chat_parameters(Some(&options)),
            Some(json!({"temperature": 0.2, "max_tokens": 64}))
        );
        assert_eq!(chat_parameters(Some(&ChatOptions::default())), None);
        assert_eq!(chat_parameters(None), None);
    }

    #[test]
    fn a_conversation_becomes_openai_messages() {
        let call = ToolCall {
            call_id: "call_1".into(),
            fn_name: "weather".into(),
            fn_arguments: json!({"city": "Oslo"}),
            thought_signatures: None,
        };
        let request = ChatRequest::new(vec![
            ChatMessage::user("Weather in Oslo?"),
            ChatMessage::from(vec![call]),
            ChatMessage::from(ToolResponse::new("call_1", "sunny")),
        ])
        .with_system("Be brief")
        .with_tools(vec![Tool::new("weather").with_description("Looks it up")]);
        assert_eq!(
            chat_input(&request),
            json!({
                "messages": [
                    {"role": "system", "content": "Be brief"},
                    {"role": "user", "content": "Weather in Oslo?"},
                    {"role": "assistant", "content": null, "tool_calls": [{
                        "id": "call_1", "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                    }]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                ],
                "tools": [{"type": "function",
                           "function": {"name": "weather", "description": "Looks it up"}}],
            })
        );
    }

    #[test]
    fn binaries_are_named_never_copied() {
        let content = MessageContent::from_text("What is this?").append(Binary::new(
            "image/png",
            BinarySource::Base64("iVBORw0KGgo".into()),
            Some("cat.png".into()),
        ));
        assert_eq!(
            content_value(&content),
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "binary", "content_type": "image/png", "name": "cat.png"},
            ])
        );
    }
}
