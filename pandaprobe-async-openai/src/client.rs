//! The traced client: an `async_openai::Client` with the PandaProbe client its spans go to.

use async_openai::config::Config;

use crate::chat::TracedChat;
use crate::embeddings::TracedEmbeddings;
use crate::options::{Options, DEFAULT_PROVIDER};

/// An `async_openai::Client` whose chat completions and embeddings are traced.
///
/// Cheap to clone when the inner client is (both clients are handles). Reach the APIs that are
/// not traced through [`inner`](Self::inner).
#[derive(Clone)]
pub struct TracedClient<C: Config> {
    inner: async_openai::Client<C>,
    probe: pandaprobe::Client,
    options: Options,
}

impl<C: Config> std::fmt::Debug for TracedClient<C> {
    // The inner client's config holds the provider key: it is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedClient")
            .field("capture_content", &self.options.capture_content)
            .field("provider", &self.options.provider)
            .finish_non_exhaustive()
    }
}

impl<C: Config> TracedClient<C> {
    /// Wraps `inner` so that its calls are recorded through `probe`.
    pub fn new(inner: async_openai::Client<C>, probe: &pandaprobe::Client) -> Self {
        TracedClient {
            inner,
            probe: probe.clone(),
            options: Options {
                capture_content: true,
                provider: DEFAULT_PROVIDER.to_owned(),
            },
        }
    }

    /// Whether spans carry the prompts and answers (`input`, `output`); on by default.
    ///
    /// Off, a span still has the model, the parameters, token usage, timing and errors.
    #[must_use]
    pub fn capture_content(mut self, on: bool) -> Self {
        self.options.capture_content = on;
        self
    }

    /// The provider recorded in each span's metadata, e.g. `"vllm"` or `"ollama"` for an
    /// OpenAI-compatible server; `"openai"` by default.
    #[must_use]
    pub fn provider(mut self, name: impl Into<String>) -> Self {
        self.options.provider = name.into();
        self
    }

    /// Traced chat completions.
    pub fn chat(&self) -> TracedChat<'_, C> {
        TracedChat::new(&self.inner, &self.probe, &self.options)
    }

    /// Traced embeddings.
    pub fn embeddings(&self) -> TracedEmbeddings<'_, C> {
        TracedEmbeddings::new(&self.inner, &self.probe, &self.options)
    }

    /// The traced Responses API (feature `responses`).
    #[cfg(feature = "responses")]
    #[cfg_attr(docsrs, doc(cfg(feature = "responses")))]
    pub fn responses(&self) -> crate::responses::TracedResponses<'_, C> {
        crate::responses::TracedResponses::new(&self.inner, &self.probe, &self.options)
    }

    /// The wrapped client, for the APIs this crate does not trace.
    pub fn inner(&self) -> &async_openai::Client<C> {
        &self.inner
    }

    /// The PandaProbe client the spans go to.
    pub fn probe(&self) -> &pandaprobe::Client {
        &self.probe
    }
}

/// Adds [`traced`](OpenAIExt::traced) to `async_openai::Client`.
pub trait OpenAIExt<C: Config>: Sized {
    /// Wraps the client so that its chat completions and embeddings are traced into `probe`.
    fn traced(self, probe: &pandaprobe::Client) -> TracedClient<C>;
}

impl<C: Config> OpenAIExt<C> for async_openai::Client<C> {
    fn traced(self, probe: &pandaprobe::Client) -> TracedClient<C> {
        TracedClient::new(self, probe)
    }
}
