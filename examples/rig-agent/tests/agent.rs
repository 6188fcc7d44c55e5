//! A real rig agent (rig-core and rig-agent 0.44, OpenAI Chat Completions against the offline
//! fake provider) under `TracingLayer`: what reaches the test server, with no wrapper and no
//! mark. Each test installs the layer for its own thread only (`set_default`), so tests do not
//! see each other's spans.

use std::time::Duration;

use futures_util::StreamExt;
use pandaprobe::TracingLayer;
use pandaprobe_fake_provider::{
    FakeProvider, Reply, CACHED_TOKENS, DEFAULT_ANSWER, DEFAULT_MODEL, PROMPT_TOKENS,
    REASONING_TOKENS,
};
use pandaprobe_rig_example::weather_agent;
use pandaprobe_testing::TestServer;
use rig_agent::prelude::*;
use serde_json::{json, Value};
use tracing_subscriber::prelude::*;

const WAIT: Duration = Duration::from_secs(20);
const QUESTION: &str = "What is the weather in Paris?";

struct Setup {
    server: TestServer,
    provider: FakeProvider,
    probe: pandaprobe::Client,
    _layer: tracing::subscriber::DefaultGuard,
}

fn setup() -> Setup {
    let server = TestServer::builder()
        .lenient()
        .start()
        .expect("test server");
    let provider = FakeProvider::start().expect("fake provider");
    let probe = pandaprobe::Client::builder()
        .api_key(server.api_key())
        .endpoint(server.url())
        .project_name("rig-tests")
        .build()
        .expect("client");
    let layer = tracing_subscriber::registry()
        .with(TracingLayer::new(probe.clone()))
        .set_default();
    Setup {
        server,
        provider,
        probe,
        _layer: layer,
    }
}

impl Setup {
    fn agent(&self, record_content: bool) -> Agent {
        weather_agent(
            &self.provider.base_url(),
            "sk-test",
            DEFAULT_MODEL,
            record_content,
        )
    }

    /// The one trace the run made, as the server stored it.
    async fn stored(&self) -> Value {
        self.probe.flush_async(WAIT).await.expect("flush");
        let traces = self.server.traces();
        assert_eq!(traces.len(), 1, "one trace per agent run");
        self.server
            .wait_for_stored_trace(traces[0].id, WAIT)
            .expect("stored")
    }
}

fn spans_of<'a>(trace: &'a Value, kind: &str) -> Vec<&'a Value> {
    let spans = trace["spans"].as_array().expect("spans");
    spans.iter().filter(|s| s["kind"] == kind).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_tool_using_run_is_a_trace_with_llm_and_tool_spans() {
    let s = setup();
    s.provider
        .push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
    let answer = s.agent(true).prompt(QUESTION).await.expect("answer");
    assert_eq!(answer.output(), DEFAULT_ANSWER);

    let trace = s.stored().await;
    assert_eq!(trace["name"], "weather-agent");
    assert_eq!(trace["input"], QUESTION);
    assert_eq!(trace["output"], DEFAULT_ANSWER);
    let llm = spans_of(&trace, "LLM");
    assert_eq!(llm.len(), 2, "one per model call");
    for span in &llm {
        assert_eq!(span["name"], format!("chat {DEFAULT_MODEL}"));
        assert_eq!(span["model"], DEFAULT_MODEL);
        assert_eq!(span["status"], "OK");
        assert_eq!(span["token_usage"]["prompt_tokens"], PROMPT_TOKENS);
        // rig reads OpenAI's details and records them under the conventions' names.
        assert_eq!(span["token_usage"]["cache_read_tokens"], CACHED_TOKENS);
        assert_eq!(span["token_usage"]["reasoning_tokens"], REASONING_TOKENS);
        assert_eq!(span["metadata"]["gen_ai.provider.name"], "openai");
        assert_eq!(
            span["input"]["messages"][1],
            json!({"role": "user", "content": QUESTION})
        );
    }
    let call = &llm[0]["output"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(llm[1]["output"]["content"], DEFAULT_ANSWER);
    assert_eq!(
        llm[1]["input"]["messages"][3]["role"], "tool",
        "the tool's result went back"
    );

    let tools = spans_of(&trace, "TOOL");
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["name"], "get_weather");
    assert_eq!(tools[0]["status"], "OK");
    assert_eq!(tools[0]["input"], json!({"city": "Paris"}));
    assert_eq!(tools[0]["output"]["celsius"], 18);
}

#[tokio::test(flavor = "current_thread")]
async fn a_streamed_run_records_the_answer_and_usage() {
    let s = setup();
    let mut stream = s.agent(true).prompt(QUESTION).stream();
    let mut answer = None;
    while let Some(item) = stream.next().await {
        if let MultiTurnStreamItem::FinalResponse(last) = item.expect("item") {
            answer = Some(last.output().to_owned());
        }
    }
    assert_eq!(answer.as_deref(), Some(DEFAULT_ANSWER));
    let trace = s.stored().await;
    let llm = spans_of(&trace, "LLM");
    assert_eq!(llm.len(), 1);
    assert_eq!(llm[0]["status"], "OK");
    assert_eq!(llm[0]["output"]["content"], DEFAULT_ANSWER);
    assert_eq!(llm[0]["metadata"]["gen_ai.request.stream"], true);
    assert_eq!(
        llm[0]["token_usage"]["prompt_tokens"], PROMPT_TOKENS,
        "{:#}",
        llm[0]
    );
}

/// rig 0.44 records nothing on its span when a model call fails (no error, no event): the
/// error reaches the caller, and the span can only say it never got an answer.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_model_call_is_not_reported_ok() {
    let s = setup();
    s.provider
        .push(Reply::error(500, "the model is overloaded"));
    let result = s.agent(true).prompt(QUESTION).await;
    assert!(result.is_err());
    let trace = s.stored().await;
    let llm = spans_of(&trace, "LLM");
    assert_eq!(llm.len(), 1);
    assert_eq!(
        llm[0]["status"], "UNSET",
        "no answer, so not OK: {:#}",
        llm[0]
    );
    assert!(llm[0]["output"].is_null() && llm[0]["token_usage"].is_null());
    assert_eq!(
        llm[0]["input"]["messages"][1]["content"], QUESTION,
        "what was asked"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn with_rigs_content_recording_off_no_content_arrives() {
    let s = setup();
    s.provider
        .push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
    s.agent(false).prompt(QUESTION).await.expect("answer");
    let trace = s.stored().await;
    let text = trace["spans"].to_string();
    assert!(
        !text.contains("Paris"),
        "no prompt, no tool arguments: {text}"
    );
    assert!(!text.contains(DEFAULT_ANSWER), "no answer: {text}");
    let llm = spans_of(&trace, "LLM");
    assert_eq!(llm.len(), 2);
    assert!(llm
        .iter()
        .all(|s| s["token_usage"]["prompt_tokens"] == PROMPT_TOKENS));
}
