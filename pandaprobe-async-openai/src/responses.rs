//! The traced Responses API (feature `responses`): `create` and `create_stream`, recorded as
//! `LLM` spans. Requests and responses are read as JSON, so that the many item types of the
//! API pass into the span without a mapping for each.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::config::Config;
use async_openai::error::OpenAIError;
use async_openai::types::responses::{
    CreateResponse, Response, ResponseStream, ResponseStreamEvent,
};
use futures_core::Stream;
use pandaprobe::{Span, SpanKind, SpanStatus, TokenUsage};
use serde_json::{json, Map, Value};

use crate::mapping::{metadata, parameters};
use crate::options::Options;
use crate::stream::MAX_ASSEMBLED_BYTES;

/// The span name of a Responses API call.
pub const RESPONSES_SPAN_NAME: &str = "openai-response";

/// Request fields recorded as model parameters; `user`, `metadata`, `safety_identifier` and
/// `prompt_cache_key` (identifiers of your users) stay out.
const RESPONSES_PARAMETERS: &[&str] = &[
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "parallel_tool_calls",
    "reasoning",
    "service_tier",
    "text",
    "tool_choice",
    "truncation",
    "top_logprobs",
    "background",
];

/// Traced [`async_openai::Responses`]: from
/// [`TracedClient::responses`](crate::TracedClient::responses).
pub struct TracedResponses<'c, C: Config> {
    inner: &'c async_openai::Client<C>,
    probe: &'c pandaprobe::Client,
    options: &'c Options,
}

impl<'c, C: Config> TracedResponses<'c, C> {
    pub(crate) fn new(
        inner: &'c async_openai::Client<C>,
        probe: &'c pandaprobe::Client,
        options: &'c Options,
    ) -> Self {
        TracedResponses {
            inner,
            probe,
            options,
        }
    }

    /// [`async_openai::Responses::create`], recorded as an `LLM` span; the response or the
    /// error is returned unchanged.
    pub async fn create(&self, request: CreateResponse) -> Result<Response, OpenAIError> {
        let span = open_span(self.probe, self.options, &request, false);
        let result = self.inner.responses().create(request).await;
        match &result {
            Ok(response) => match serde_json::to_value(response) {
                Ok(response) => record_response(&span, self.options, &response, false),
                Err(_) => span.set_status(SpanStatus::Ok),
            },
            Err(error) => span.set_error(error.to_string()),
        }
        result
    }

    /// [`async_openai::Responses::create_stream`], recorded as an `LLM` span that ends with
    /// the stream: the time of the first delta, then the whole response (output and usage) of
    /// the `response.completed` event. A failed or incomplete response, an error event, a
    /// stream error, a stream that stops before its last event or one dropped early ends the
    /// span as `ERROR` with the text received so far.
    pub async fn create_stream(
        &self,
        request: CreateResponse,
    ) -> Result<TracedResponseStream, OpenAIError> {
        let span = open_span(self.probe, self.options, &request, true);
        match self.inner.responses().create_stream(request).await {
            Ok(stream) => Ok(TracedResponseStream {
                inner: stream,
                span: Some(span),
                options: self.options.clone(),
                events: 0,
                first_delta: false,
                text: String::new(),
            }),
            Err(error) => {
                span.set_error(error.to_string());
                Err(error)
            }
        }
    }
}

fn open_span(
    probe: &pandaprobe::Client,
    options: &Options,
    request: &CreateResponse,
    stream: bool,
) -> Span {
    let span = probe.span(RESPONSES_SPAN_NAME, SpanKind::Llm);
    if let Some(model) = &request.model {
        span.set_model(model.clone());
    }
    if let Ok(request) = serde_json::to_value(request) {
        if let Some(parameters) = parameters(&request, RESPONSES_PARAMETERS) {
            span.set_model_parameters(parameters);
        }
        if options.capture_content {
            span.set_input(responses_input(&request));
        }
    }
    span.set_metadata(metadata(
        &options.provider,
        [("stream", Value::Bool(stream))],
    ));
    span
}

/// `{"messages": [...]}`: the instructions as a system message, then the input (a text as a
/// user message, a list of items as they are: messages are `{role, content}` there too), with
/// `"tools"` when the request declares any.
fn responses_input(request: &Value) -> Value {
    let mut messages = Vec::new();
    if let Some(instructions) = request["instructions"].as_str() {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match &request["input"] {
        Value::String(text) => messages.push(json!({"role": "user", "content": text})),
        Value::Array(items) => messages.extend(items.iter().cloned()),
        Value::Null => {}
        other => messages.push(other.clone()),
    }
    let mut input = Map::new();
    input.insert("messages".to_owned(), Value::Array(messages));
    if let Some(tools) = request["tools"].as_array().filter(|t| !t.is_empty()) {
        input.insert("tools".to_owned(), Value::Array(tools.clone()));
    }
    Value::Object(input)
}

/// The output items as one assistant message: the text of the `message` items as `content`,
/// refusals as `refusal`, `function_call` items as `tool_calls`; items of other types
/// (reasoning, built-in tool calls) are kept as they are under `output_items`.
fn responses_output(response: &Value) -> Option<Value> {
    let items = response["output"].as_array()?;
    let (mut text, mut refusal) = (String::new(), String::new());
    let (mut calls, mut others) = (Vec::new(), Vec::new());
    for item in items {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    match part["type"].as_str() {
                        Some("output_text") => text.push_str(part["text"].as_str().unwrap_or("")),
                        Some("refusal") => refusal.push_str(part["refusal"].as_str().unwrap_or("")),
                        _ => others.push(part.clone()),
                    }
                }
            }
            Some("function_call") => calls.push(json!({
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            })),
            _ => others.push(item.clone()),
        }
    }
    let mut message = Map::new();
    message.insert("role".to_owned(), json!("assistant"));
    message.insert(
        "content".to_owned(),
        if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !refusal.is_empty() {
        message.insert("refusal".to_owned(), Value::String(refusal));
    }
    if !calls.is_empty() {
        message.insert("tool_calls".to_owned(), Value::Array(calls));
    }
    if !others.is_empty() {
        message.insert("output_items".to_owned(), Value::Array(others));
    }
    Some(Value::Object(message))
}

/// Fields of a built-in tool call that hold what the tool found or made, not what it was asked.
const TOOL_RESULT_FIELDS: [&str; 5] = ["results", "outputs", "output", "result", "error"];

/// The tools the provider ran inside the response (web search, file search, code interpreter,
/// MCP, image generation, ...): a `TOOL` child span each, named by the item's type, as the
/// Python SDK records them; `ERROR` when the item failed or carries an error. They start and
/// end with the response: it says what ran, not when. Function calls (`function_call`,
/// `custom_tool_call`) get none: the application runs those, in spans of its own.
fn record_builtin_tools(span: &Span, options: &Options, response: &Value) {
    for item in response["output"].as_array().into_iter().flatten() {
        let Some(kind) = item["type"].as_str() else {
            continue;
        };
        if !kind.ends_with("_call") || matches!(kind, "function_call" | "custom_tool_call") {
            continue;
        }
        let tool = span.span(kind, SpanKind::Tool);
        if let Some(id) = item["id"].as_str() {
            tool.set_metadata(json!({ "item_id": id }));
        }
        if options.capture_content {
            let (mut input, mut output) = (Map::new(), Map::new());
            for (key, value) in item.as_object().into_iter().flatten() {
                if matches!(key.as_str(), "id" | "type" | "status") || value.is_null() {
                    continue;
                }
                let side = if TOOL_RESULT_FIELDS.contains(&key.as_str()) {
                    &mut output
                } else {
                    &mut input
                };
                side.insert(key.clone(), value.clone());
            }
            tool.set_input(Value::Object(input));
            if !output.is_empty() {
                tool.set_output(Value::Object(output));
            }
        }
        let status = item["status"].as_str().unwrap_or("completed");
        match (&item["error"], status) {
            (Value::Null, "failed" | "incomplete") => tool.set_error(format!("{kind} {status}")),
            (Value::Null, _) => tool.set_status(SpanStatus::Ok),
            (error, _) => tool.set_error(match error.as_str() {
                Some(text) => text.to_owned(),
                None => error.to_string(),
            }),
        }
        tool.end();
    }
}

/// Model, usage, output and status of a whole response (from `create`, or the last event of a
/// stream).
fn record_response(span: &Span, options: &Options, response: &Value, stream: bool) {
    record_builtin_tools(span, options, response);
    if let Some(model) = response["model"].as_str().filter(|m| !m.is_empty()) {
        span.set_model(model);
    }
    let usage = &response["usage"];
    if let (Some(input), Some(output)) = (
        usage["input_tokens"].as_u64(),
        usage["output_tokens"].as_u64(),
    ) {
        let mut counts = TokenUsage::new(input, output);
        if let Some(cached) = usage["input_tokens_details"]["cached_tokens"].as_u64() {
            counts = counts.with_cache_read_tokens(cached);
        }
        if let Some(reasoning) = usage["output_tokens_details"]["reasoning_tokens"].as_u64() {
            counts = counts.with_reasoning_tokens(reasoning);
        }
        span.set_usage(counts);
    }
    let status = response["status"].as_str().unwrap_or("completed");
    span.set_metadata(metadata(
        &options.provider,
        [
            ("stream", Value::Bool(stream)),
            ("response_id", response["id"].clone()),
            ("response_status", Value::String(status.to_owned())),
            ("incomplete_details", response["incomplete_details"].clone()),
        ],
    ));
    if options.capture_content {
        if let Some(output) = responses_output(response) {
            span.set_output(output);
        }
    }
    match status {
        "failed" => span.set_error(match response["error"]["message"].as_str() {
            Some(message) => format!("response failed: {message}"),
            None => "response failed".to_owned(),
        }),
        "incomplete" => span.set_error(format!(
            "response incomplete: {}",
            response["incomplete_details"]["reason"]
                .as_str()
                .unwrap_or("no reason given")
        )),
        _ => span.set_status(SpanStatus::Ok),
    }
}

/// The stream [`TracedResponses::create_stream`] returns: the events of `async_openai`'s
/// stream, unchanged, with the span ended by the response's last event, an error, or a drop.
pub struct TracedResponseStream {
    inner: ResponseStream,
    span: Option<Span>,
    options: Options,
    events: u64,
    first_delta: bool,
    /// The text deltas so far, bounded by [`MAX_ASSEMBLED_BYTES`]: the output of a stream that
    /// ends before its last event.
    text: String,
}

impl std::fmt::Debug for TracedResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedResponseStream")
            .field("events", &self.events)
            .field("ended", &self.span.is_none())
            .finish_non_exhaustive()
    }
}

impl TracedResponseStream {
    fn on_event(&mut self, event: &ResponseStreamEvent) {
        let Some(span) = &self.span else {
            return;
        };
        self.events += 1;
        let delta = match event {
            ResponseStreamEvent::ResponseCompleted(e) => return self.finish(&e.response),
            ResponseStreamEvent::ResponseIncomplete(e) => return self.finish(&e.response),
            ResponseStreamEvent::ResponseFailed(e) => return self.finish(&e.response),
            ResponseStreamEvent::ResponseError(e) => {
                let message = format!("error event after {} events: {}", self.events, e.message);
                return self.fail(message);
            }
            ResponseStreamEvent::ResponseOutputTextDelta(e) => Some(e.delta.as_str()),
            ResponseStreamEvent::ResponseRefusalDelta(_)
            | ResponseStreamEvent::ResponseFunctionCallArgumentsDelta(_)
            | ResponseStreamEvent::ResponseReasoningTextDelta(_)
            | ResponseStreamEvent::ResponseReasoningSummaryTextDelta(_) => None,
            _ => return,
        };
        if !self.first_delta {
            self.first_delta = true;
            span.set_completion_start();
        }
        if let (Some(delta), true) = (delta, self.options.capture_content) {
            let room = MAX_ASSEMBLED_BYTES.saturating_sub(self.text.len());
            let mut cut = delta.len().min(room);
            while !delta.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&delta[..cut]);
        }
    }

    /// The last event: the whole response.
    fn finish(&mut self, response: &Response) {
        let Some(span) = self.span.take() else {
            return;
        };
        match serde_json::to_value(response) {
            Ok(response) => record_response(&span, &self.options, &response, true),
            Err(_) => span.set_status(SpanStatus::Ok),
        }
    }

    /// An end before the last event: the text so far is the output.
    fn fail(&mut self, error: String) {
        let Some(span) = self.span.take() else {
            return;
        };
        if self.options.capture_content && !self.text.is_empty() {
            let text = std::mem::take(&mut self.text);
            span.set_output(json!({"role": "assistant", "content": text}));
        }
        span.set_error(error);
    }
}

impl Stream for TracedResponseStream {
    type Item = Result<ResponseStreamEvent, OpenAIError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(event))) => this.on_event(event),
            Poll::Ready(Some(Err(error))) => {
                let message = format!("stream failed after {} events: {error}", this.events);
                this.fail(message);
            }
            Poll::Ready(None) => {
                let message = format!(
                    "stream ended before the response's last event, after {} events",
                    this.events
                );
                this.fail(message);
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for TracedResponseStream {
    fn drop(&mut self) {
        let message = format!(
            "stream dropped before its end, after {} events",
            self.events
        );
        self.fail(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_and_text_input_become_messages() {
        let request = json!({"model": "m", "instructions": "Be brief.", "input": "Hi",
                             "tools": [{"type": "function", "name": "f"}]});
        assert_eq!(
            responses_input(&request),
            json!({"messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hi"}],
                   "tools": [{"type": "function", "name": "f"}]})
        );
    }

    #[test]
    fn output_items_become_one_assistant_message_and_other_items_are_kept() {
        let response = json!({"output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "Sunny."}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]});
        assert_eq!(
            responses_output(&response),
            Some(json!({"role": "assistant", "content": "Sunny.",
                        "tool_calls": [{"id": "c1", "type": "function",
                                        "function": {"name": "f", "arguments": "{}"}}],
                        "output_items": [{"type": "reasoning", "id": "rs_1", "summary": []}]}))
        );
        assert_eq!(responses_output(&json!({})), None);
    }

    #[test]
    fn built_in_tools_split_request_from_result_and_fail_by_status_or_error() {
        let capture = pandaprobe::Capture::new();
        let probe = pandaprobe::Client::builder()
            .capture(&capture)
            .build()
            .expect("client");
        let options = Options {
            capture_content: true,
            provider: "openai".to_owned(),
        };
        let response = json!({"output": [
            {"type": "file_search_call", "id": "fs_1", "status": "completed",
             "queries": ["q"], "results": [{"file_id": "f1"}]},
            {"type": "code_interpreter_call", "id": "ci_1", "status": "failed", "code": "1/0",
             "outputs": null},
            {"type": "mcp_call", "id": "mcp_1", "server_label": "s", "name": "n",
             "arguments": "{}", "error": {"message": "refused"}},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "g", "input": "x"},
            {"id": "no_type"},
        ]});
        let span = probe.span("call", SpanKind::Llm);
        let trace_id = span.trace_id();
        record_builtin_tools(&span, &options, &response);
        drop(span);
        probe
            .flush(std::time::Duration::from_secs(10))
            .expect("flushed");
        let trace = capture.trace(trace_id).expect("captured");
        let tools: Vec<&Value> = trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["kind"] == "TOOL")
            .collect();
        let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(
            names,
            ["file_search_call", "code_interpreter_call", "mcp_call"]
        );
        assert_eq!(tools[0]["input"], json!({"queries": ["q"]}));
        assert_eq!(tools[0]["output"], json!({"results": [{"file_id": "f1"}]}));
        assert_eq!(tools[0]["status"], "OK");
        assert_eq!(tools[1]["input"], json!({"code": "1/0"}), "nulls left out");
        assert_eq!(tools[1]["status"], "ERROR");
        assert_eq!(tools[1]["error"], "code_interpreter_call failed");
        assert_eq!(tools[2]["status"], "ERROR");
        assert_eq!(tools[2]["error"], r#"{"message":"refused"}"#);
        assert_eq!(tools[2]["output"], json!({"error": {"message": "refused"}}));
    }
}
