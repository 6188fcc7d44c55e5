//! Traced chat completions: the request is recorded when the call starts, the answer (or the
//! error) when it returns.

use async_openai::config::Config;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse};
use pandaprobe::{Span, SpanKind, SpanStatus};
use serde_json::{json, Value};

use crate::mapping::{chat_input, chat_output, chat_parameters, metadata, record_usage};
use crate::options::Options;
use crate::stream::TracedChatStream;

/// The span name of a chat completion: the Python SDK's `wrap_openai` uses the same, so one
/// project's traces read alike whichever SDK sent them.
pub const CHAT_SPAN_NAME: &str = "openai-chat";

/// Traced [`async_openai::Chat`]: from [`TracedClient::chat`](crate::TracedClient::chat).
pub struct TracedChat<'c, C: Config> {
    inner: &'c async_openai::Client<C>,
    probe: &'c pandaprobe::Client,
    options: &'c Options,
}

impl<'c, C: Config> TracedChat<'c, C> {
    pub(crate) fn new(
        inner: &'c async_openai::Client<C>,
        probe: &'c pandaprobe::Client,
        options: &'c Options,
    ) -> Self {
        TracedChat {
            inner,
            probe,
            options,
        }
    }

    /// [`async_openai::Chat::create`], recorded as an `LLM` span.
    ///
    /// The answer or the error is returned unchanged.
    pub async fn create(
        &self,
        request: CreateChatCompletionRequest,
    ) -> Result<CreateChatCompletionResponse, OpenAIError> {
        let (span, request) = open_span(self.probe, self.options, request, false);
        let result = self.inner.chat().create(request).await;
        match &result {
            Ok(response) => record_response(&span, self.options, response),
            Err(error) => span.set_error(error.to_string()),
        }
        result
    }

    /// [`async_openai::Chat::create_stream`], recorded as an `LLM` span that ends with the
    /// stream.
    ///
    /// The chunks pass through unchanged. The span records the time of the first chunk that
    /// carries content or a tool call, and the whole answer assembled from the chunks. An
    /// error in the stream, or dropping it before its end, ends the span as `ERROR` with what
    /// had arrived. Token usage is recorded when the request asks for it
    /// (`stream_options.include_usage`).
    pub async fn create_stream(
        &self,
        request: CreateChatCompletionRequest,
    ) -> Result<TracedChatStream, OpenAIError> {
        let (span, request) = open_span(self.probe, self.options, request, true);
        match self.inner.chat().create_stream(request).await {
            Ok(stream) => Ok(TracedChatStream::new(stream, span, self.options.clone())),
            Err(error) => {
                span.set_error(error.to_string());
                Err(error)
            }
        }
    }
}

/// Opens the span and records what the request says. The messages and tools are set aside
/// while the rest is serialised, so with capture off a megabyte prompt is never copied.
fn open_span(
    probe: &pandaprobe::Client,
    options: &Options,
    mut request: CreateChatCompletionRequest,
    stream: bool,
) -> (Span, CreateChatCompletionRequest) {
    let span = probe.span(CHAT_SPAN_NAME, SpanKind::Llm);
    span.set_model(request.model.clone());

    let messages = std::mem::take(&mut request.messages);
    let tools = request.tools.take();
    if let Some(parameters) = serde_json::to_value(&request)
        .ok()
        .as_ref()
        .and_then(chat_parameters)
    {
        span.set_model_parameters(parameters);
    }
    request.messages = messages;
    request.tools = tools;

    if options.capture_content {
        let messages = serde_json::to_value(&request.messages).unwrap_or(Value::Null);
        let tools = request
            .tools
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok());
        span.set_input(chat_input(messages, tools));
    }
    span.set_metadata(metadata(
        &options.provider,
        [("stream", Value::Bool(stream))],
    ));
    (span, request)
}

fn record_response(span: &Span, options: &Options, response: &CreateChatCompletionResponse) {
    if !response.model.is_empty() {
        span.set_model(response.model.clone());
    }
    if options.capture_content {
        let messages = response
            .choices
            .iter()
            .filter_map(|choice| serde_json::to_value(&choice.message).ok())
            .map(without_audio)
            .collect();
        if let Some(output) = chat_output(messages) {
            span.set_output(output);
        }
    }
    if let Some(usage) = &response.usage {
        record_usage(span, usage);
    }
    let finish_reasons: Vec<Value> = response
        .choices
        .iter()
        .filter_map(|c| c.finish_reason.as_ref())
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    span.set_metadata(metadata(
        &options.provider,
        [
            ("stream", Value::Bool(false)),
            ("response_id", json!(response.id)),
            ("finish_reasons", Value::Array(finish_reasons)),
        ],
    ));
    span.set_status(SpanStatus::Ok);
}

/// Audio output is base64 of a whole recording: it is left out of the span.
fn without_audio(mut message: Value) -> Value {
    if let Some(object) = message.as_object_mut() {
        object.remove("audio");
    }
    message
}
