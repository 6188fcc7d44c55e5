//! What the integration tests share: a lenient test server, the fake provider, and an
//! OpenAI client pointed at it, traced into a PandaProbe client of that server.
#![allow(dead_code)]

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use pandaprobe_async_openai::{OpenAIExt, TracedClient};
use pandaprobe_fake_provider::{FakeProvider, CACHED_TOKENS, PROMPT_TOKENS, REASONING_TOKENS};
use pandaprobe_testing::TestServer;
use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(20);
pub const PROVIDER_KEY: &str = "sk-test-provider-key-0123456789";

pub struct Setup {
    pub server: TestServer,
    pub provider: FakeProvider,
    pub probe: pandaprobe::Client,
    pub openai: TracedClient<OpenAIConfig>,
}

pub fn setup() -> Setup {
    let server = TestServer::builder()
        .lenient()
        .start()
        .expect("test server");
    let provider = FakeProvider::start().expect("fake provider");
    let probe = pandaprobe::Client::builder()
        .api_key(server.api_key())
        .endpoint(server.url())
        .project_name("async-openai-tests")
        .build()
        .expect("client");
    let config = OpenAIConfig::new()
        .with_api_base(provider.base_url())
        .with_api_key(PROVIDER_KEY);
    let openai = async_openai::Client::with_config(config).traced(&probe);
    Setup {
        server,
        provider,
        probe,
        openai,
    }
}

/// The token counts of an answer the fake provider gave: its fixed prompt, cache and reasoning
/// counts under PandaProbe's keys, and a total that adds up.
pub fn assert_usage(span: &Value) {
    let usage = &span["token_usage"];
    assert_eq!(usage["prompt_tokens"], PROMPT_TOKENS, "{usage}");
    assert_eq!(usage["cache_read_tokens"], CACHED_TOKENS, "{usage}");
    assert_eq!(usage["reasoning_tokens"], REASONING_TOKENS, "{usage}");
    let completion = usage["completion_tokens"].as_u64().unwrap_or(0);
    assert!(completion > REASONING_TOKENS, "{usage}");
    assert_eq!(usage["total_tokens"], PROMPT_TOKENS + completion, "{usage}");
}

impl Setup {
    /// Runs `body` inside a trace of its own and returns that trace as the server stored it.
    pub async fn in_trace<F: std::future::Future>(&self, body: F) -> (F::Output, Value) {
        let trace = self.probe.start_trace("agent-run");
        let id = trace.trace_id();
        let out = trace.in_scope(body).await;
        trace.end();
        drop(trace);
        (out, self.stored(id).await)
    }

    /// The trace `id` once flushed and stored.
    pub async fn stored(&self, id: pandaprobe::Uuid) -> Value {
        self.probe.flush_async(WAIT).await.expect("flush");
        self.server
            .wait_for_stored_trace(id, WAIT)
            .unwrap_or_else(|| panic!("trace {id} never stored"))
    }
}

/// The one span of a stored trace.
pub fn only_span(trace: &Value) -> &Value {
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 1, "one span: {spans:#?}");
    &spans[0]
}
