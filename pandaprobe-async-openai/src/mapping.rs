//! What goes from an OpenAI request, answer or error into a span's fields.

use async_openai::types::chat::CompletionUsage;
use pandaprobe::{Span, TokenUsage};
use serde_json::{Map, Value};

/// Request fields recorded as model parameters. An allowlist: a new request field that might
/// carry user data (like `user` or `metadata`) stays out until someone decides otherwise.
const CHAT_PARAMETERS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "reasoning_effort",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "service_tier",
    "logprobs",
    "top_logprobs",
];

/// Embedding request fields recorded as model parameters.
pub(crate) const EMBEDDING_PARAMETERS: &[&str] = &["dimensions", "encoding_format"];

/// The allowlisted fields of a serialised request, or `None` when it has none.
pub(crate) fn parameters(request: &Value, allowed: &[&str]) -> Option<Value> {
    let object = request.as_object()?;
    let picked: Map<String, Value> = allowed
        .iter()
        .filter_map(|key| {
            let value = object.get(*key)?;
            (!value.is_null()).then(|| ((*key).to_owned(), value.clone()))
        })
        .collect();
    (!picked.is_empty()).then_some(Value::Object(picked))
}

/// The chat parameters of a serialised request.
pub(crate) fn chat_parameters(request: &Value) -> Option<Value> {
    parameters(request, CHAT_PARAMETERS)
}

/// The span input of a chat request: `{"messages": [...]}`, with `"tools"` when it declares any.
pub(crate) fn chat_input(messages: Value, tools: Option<Value>) -> Value {
    let mut input = Map::new();
    input.insert("messages".to_owned(), messages);
    if let Some(tools) = tools.filter(|t| !t.is_null()) {
        input.insert("tools".to_owned(), tools);
    }
    Value::Object(input)
}

/// One assistant message as the output, a list of them when the request asked for several.
pub(crate) fn chat_output(mut messages: Vec<Value>) -> Option<Value> {
    match messages.len() {
        0 => None,
        1 => messages.pop(),
        _ => Some(Value::Array(messages)),
    }
}

/// `metadata` for a span: the provider, then whatever the answer added.
pub(crate) fn metadata(
    provider: &str,
    extra: impl IntoIterator<Item = (&'static str, Value)>,
) -> Value {
    let mut map = Map::new();
    map.insert("provider".to_owned(), Value::String(provider.to_owned()));
    for (key, value) in extra {
        if !value.is_null() {
            map.insert(key.to_owned(), value);
        }
    }
    Value::Object(map)
}

/// The token counts of a chat answer, with the cached prompt and reasoning counts when given.
pub(crate) fn record_usage(span: &Span, usage: &CompletionUsage) {
    let mut counts = TokenUsage::new(
        u64::from(usage.prompt_tokens),
        u64::from(usage.completion_tokens),
    );
    let cached = usage
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens);
    if let Some(cached) = cached {
        counts = counts.with_cache_read_tokens(u64::from(cached));
    }
    let reasoning = (usage.completion_tokens_details.as_ref()).and_then(|d| d.reasoning_tokens);
    if let Some(reasoning) = reasoning {
        counts = counts.with_reasoning_tokens(u64::from(reasoning));
    }
    span.set_usage(counts);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_allowlisted_non_null_parameters_are_kept() {
        let request = json!({
            "model": "m", "messages": [], "temperature": 0.2, "user": "alice",
            "metadata": {"k": "v"}, "seed": null, "max_completion_tokens": 64,
        });
        assert_eq!(
            chat_parameters(&request),
            Some(json!({"temperature": 0.2, "max_completion_tokens": 64}))
        );
        assert_eq!(chat_parameters(&json!({"model": "m"})), None);
    }

    #[test]
    fn one_choice_is_the_output_several_are_a_list() {
        assert_eq!(chat_output(vec![]), None);
        assert_eq!(chat_output(vec![json!(1)]), Some(json!(1)));
        assert_eq!(chat_output(vec![json!(1), json!(2)]), Some(json!([1, 2])));
    }

    #[test]
    fn tools_join_the_input_only_when_declared() {
        assert_eq!(chat_input(json!([]), None), json!({"messages": []}));
        assert_eq!(
            chat_input(json!([]), Some(json!([{"type": "function"}]))),
            json!({"messages": [], "tools": [{"type": "function"}]})
        );
    }
}
