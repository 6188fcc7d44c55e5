//! Traced embeddings: the input (when content is captured), the model and the token count; the
//! vectors themselves are left out, only how many and how long.

use async_openai::config::Config;
use async_openai::error::OpenAIError;
use async_openai::types::embeddings::{CreateEmbeddingRequest, CreateEmbeddingResponse};
use pandaprobe::{SpanKind, SpanStatus};
use serde_json::json;

use crate::mapping::{metadata, parameters, EMBEDDING_PARAMETERS};
use crate::options::Options;

/// The span name of an embeddings call.
pub const EMBEDDINGS_SPAN_NAME: &str = "openai-embeddings";

/// Traced [`async_openai::Embeddings`]: from
/// [`TracedClient::embeddings`](crate::TracedClient::embeddings).
pub struct TracedEmbeddings<'c, C: Config> {
    inner: &'c async_openai::Client<C>,
    probe: &'c pandaprobe::Client,
    options: &'c Options,
}

impl<'c, C: Config> TracedEmbeddings<'c, C> {
    pub(crate) fn new(
        inner: &'c async_openai::Client<C>,
        probe: &'c pandaprobe::Client,
        options: &'c Options,
    ) -> Self {
        TracedEmbeddings {
            inner,
            probe,
            options,
        }
    }

    /// [`async_openai::Embeddings::create`], recorded as an `EMBEDDING` span.
    pub async fn create(
        &self,
        request: CreateEmbeddingRequest,
    ) -> Result<CreateEmbeddingResponse, OpenAIError> {
        let options = self.options;
        let span = self.probe.span(EMBEDDINGS_SPAN_NAME, SpanKind::Embedding);
        span.set_model(request.model.clone());
        span.set_metadata(metadata(&options.provider, []));
        if let Ok(serialised) = serde_json::to_value(&request) {
            if let Some(parameters) = parameters(&serialised, EMBEDDING_PARAMETERS) {
                span.set_model_parameters(parameters);
            }
            if options.capture_content {
                span.set_input(json!({ "input": serialised.get("input") }));
            }
        }
        let result = self.inner.embeddings().create(request).await;
        match &result {
            Ok(response) => {
                if !response.model.is_empty() {
                    span.set_model(response.model.clone());
                }
                span.set_token_usage(u64::from(response.usage.prompt_tokens), 0);
                let dimensions = response.data.first().map(|e| e.embedding.len());
                span.set_output(json!({
                    "embeddings": response.data.len(),
                    "dimensions": dimensions,
                }));
                span.set_status(SpanStatus::Ok);
            }
            Err(error) => span.set_error(error.to_string()),
        }
        result
    }
}
