//! The traced client: a `genai::Client` with the PandaProbe client its spans go to.

use genai::chat::{ChatOptions, ChatRequest, ChatResponse, ChatStreamResponse};
use genai::embed::{EmbedOptions, EmbedRequest, EmbedResponse};
use genai::ModelSpec;
use pandaprobe::{Span, SpanKind, SpanStatus};
use serde_json::{json, Value};

use crate::mapping::{
    chat_input, chat_parameters, embed_input, embed_parameters, error_text, metadata,
    model_and_provider, record_usage, requested,
};
use crate::stream::{stream_options, TracedChatStream};

/// The span name of a chat call, plain or streamed.
pub const CHAT_SPAN_NAME: &str = "genai-chat";

/// The span name of an embeddings call.
pub const EMBED_SPAN_NAME: &str = "genai-embed";

/// A `genai::Client` whose chat and embeddings calls are traced. The methods have genai's
/// names and signatures; reach the rest of genai's API through [`inner`](Self::inner).
///
/// Cheap to clone (both clients are handles).
#[derive(Clone)]
pub struct TracedClient {
    inner: genai::Client,
    probe: pandaprobe::Client,
    capture_content: bool,
}

impl std::fmt::Debug for TracedClient {
    // The inner client's resolvers may hold provider keys: it is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedClient")
            .field("capture_content", &self.capture_content)
            .finish_non_exhaustive()
    }
}

impl TracedClient {
    /// Wraps `inner` so that its calls are recorded through `probe`.
    pub fn new(inner: genai::Client, probe: &pandaprobe::Client) -> Self {
        TracedClient {
            inner,
            probe: probe.clone(),
            capture_content: true,
        }
    }

    /// Whether spans carry the prompts and answers (`input`, `output`); on by default.
    ///
    /// Off, a span still has the model, the provider, the parameters, token usage, timing and
    /// errors.
    #[must_use]
    pub fn capture_content(mut self, on: bool) -> Self {
        self.capture_content = on;
        self
    }

    /// [`genai::Client::exec_chat`], recorded as an `LLM` span.
    pub async fn exec_chat(
        &self,
        model: impl Into<ModelSpec>,
        chat_req: ChatRequest,
        options: Option<&ChatOptions>,
    ) -> genai::Result<ChatResponse> {
        let model = model.into();
        let span = self.open_chat_span(&model, &chat_req, options, false);
        let result = self.inner.exec_chat(model, chat_req, options).await;
        match &result {
            Ok(response) => self.record_response(&span, response),
            Err(error) => span.set_error(error_text(error)),
        }
        result
    }

    /// [`genai::Client::exec_chat_stream`], recorded as an `LLM` span that ends with the
    /// stream: the time of the first chunk, the answer assembled from the chunks, the usage of
    /// the end event; an error in the stream or dropping it early ends the span as `ERROR`.
    ///
    /// The wrapper turns on `capture_usage` (and, with content capture, `capture_tool_calls`)
    /// in the options it passes on, so that the end event carries the token counts and whole
    /// tool calls; the events you read are otherwise genai's own.
    pub async fn exec_chat_stream(
        &self,
        model: impl Into<ModelSpec>,
        chat_req: ChatRequest,
        options: Option<&ChatOptions>,
    ) -> genai::Result<TracedChatStream> {
        let model = model.into();
        let span = self.open_chat_span(&model, &chat_req, options, true);
        let options = stream_options(options, self.capture_content);
        match self
            .inner
            .exec_chat_stream(model, chat_req, Some(&options))
            .await
        {
            Ok(ChatStreamResponse { stream, model_iden }) => Ok(TracedChatStream::new(
                stream,
                span,
                model_iden,
                self.capture_content,
            )),
            Err(error) => {
                span.set_error(error_text(&error));
                Err(error)
            }
        }
    }

    /// [`genai::Client::exec_embed`], recorded as an `EMBEDDING` span.
    pub async fn exec_embed(
        &self,
        model: impl Into<ModelSpec>,
        embed_req: EmbedRequest,
        options: Option<&EmbedOptions>,
    ) -> genai::Result<EmbedResponse> {
        let model = model.into();
        let (name, provider) = requested(&model);
        let span = self.probe.span(EMBED_SPAN_NAME, SpanKind::Embedding);
        span.set_model(name);
        if let Some(parameters) = embed_parameters(options) {
            span.set_model_parameters(parameters);
        }
        if self.capture_content {
            span.set_input(embed_input(&embed_req.input));
        }
        span.set_metadata(metadata(provider, []));
        let result = self.inner.exec_embed(model, embed_req, options).await;
        match &result {
            Ok(response) => {
                let (model, provider) = model_and_provider(&response.provider_model_iden);
                span.set_model(model);
                record_usage(&span, &response.usage);
                span.set_metadata(metadata(Some(provider), []));
                if self.capture_content {
                    let dimensions = response.embeddings.first().map(|e| e.dimensions);
                    span.set_output(json!({
                        "embeddings": response.embeddings.len(),
                        "dimensions": dimensions,
                    }));
                }
                span.set_status(SpanStatus::Ok);
            }
            Err(error) => span.set_error(error_text(error)),
        }
        result
    }

    /// [`genai::Client::embed`]: one input, traced.
    pub async fn embed(
        &self,
        model: impl Into<ModelSpec>,
        input: impl Into<String>,
        options: Option<&EmbedOptions>,
    ) -> genai::Result<EmbedResponse> {
        self.exec_embed(model, EmbedRequest::new(input), options)
            .await
    }

    /// [`genai::Client::embed_batch`]: several inputs, traced.
    pub async fn embed_batch(
        &self,
        model: impl Into<ModelSpec>,
        inputs: Vec<String>,
        options: Option<&EmbedOptions>,
    ) -> genai::Result<EmbedResponse> {
        self.exec_embed(model, EmbedRequest::new_batch(inputs), options)
            .await
    }

    /// The wrapped client, for the APIs this crate does not trace.
    pub fn inner(&self) -> &genai::Client {
        &self.inner
    }

    /// The PandaProbe client the spans go to.
    pub fn probe(&self) -> &pandaprobe::Client {
        &self.probe
    }

    fn open_chat_span(
        &self,
        model: &ModelSpec,
        request: &ChatRequest,
        options: Option<&ChatOptions>,
        stream: bool,
    ) -> Span {
        let (name, provider) = requested(model);
        let span = self.probe.span(CHAT_SPAN_NAME, SpanKind::Llm);
        span.set_model(name);
        if let Some(parameters) = chat_parameters(options) {
            span.set_model_parameters(parameters);
        }
        if self.capture_content {
            span.set_input(chat_input(request));
        }
        span.set_metadata(metadata(provider, [("stream", Value::Bool(stream))]));
        span
    }

    fn record_response(&self, span: &Span, response: &ChatResponse) {
        let (model, provider) = model_and_provider(&response.provider_model_iden);
        span.set_model(model);
        record_usage(span, &response.usage);
        span.set_metadata(metadata(
            Some(provider),
            [
                ("stream", Value::Bool(false)),
                (
                    "response_id",
                    response
                        .response_id
                        .clone()
                        .map_or(Value::Null, Value::String),
                ),
                (
                    "finish_reason",
                    response
                        .stop_reason
                        .as_ref()
                        .map_or(Value::Null, |r| r.raw().into()),
                ),
            ],
        ));
        if self.capture_content {
            span.set_output(crate::mapping::assistant_like(
                "assistant",
                &response.content,
                response.reasoning_content.as_deref(),
            ));
        }
        span.set_status(SpanStatus::Ok);
    }
}

/// Adds [`traced`](GenaiExt::traced) to `genai::Client`.
pub trait GenaiExt: Sized {
    /// Wraps the client so that its chat and embeddings calls are traced into `probe`.
    fn traced(self, probe: &pandaprobe::Client) -> TracedClient;
}

impl GenaiExt for genai::Client {
    fn traced(self, probe: &pandaprobe::Client) -> TracedClient {
        TracedClient::new(self, probe)
    }
}
