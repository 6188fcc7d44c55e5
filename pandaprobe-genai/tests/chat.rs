//! The spans that reach the test server for chat and embeddings calls made through the traced
//! genai client (its OpenAI adapter, pointed at the offline fake provider): plain, streamed
//! with usage, tool calls, errors, cut and dropped streams, content capture off, and which
//! trace a call joins.

use std::time::Duration;

use futures_util::StreamExt;
use genai::adapter::AdapterKind;
use genai::chat::{ChatMessage, ChatOptions, ChatRequest, ChatStreamEvent, Tool};
use genai::resolver::{AuthData, Endpoint};
use genai::{ModelIden, ServiceTarget};
use pandaprobe_fake_provider::{
    FakeProvider, Reply, CACHED_TOKENS, DEFAULT_ANSWER, DEFAULT_MODEL, PROMPT_TOKENS,
    REASONING_TOKENS,
};
use pandaprobe_genai::{GenaiExt, TracedClient, CHAT_SPAN_NAME, EMBED_SPAN_NAME};
use pandaprobe_testing::TestServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const PROVIDER_KEY: &str = "sk-test-provider-key-0123456789";

struct Setup {
    server: TestServer,
    provider: FakeProvider,
    probe: pandaprobe::Client,
    genai: TracedClient,
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
        .project_name("genai-tests")
        .build()
        .expect("client");
    // Every model name goes to the fake provider through genai's OpenAI adapter, as an
    // OpenAI-compatible server (vLLM, a gateway) is reached in production.
    let endpoint = format!("{}/", provider.base_url());
    let genai = genai::Client::builder()
        .with_service_target_resolver_fn(move |target: ServiceTarget| {
            Ok(ServiceTarget {
                endpoint: Endpoint::from_owned(endpoint.clone()),
                auth: AuthData::from_single(PROVIDER_KEY),
                model: ModelIden::new(AdapterKind::OpenAI, target.model.model_name),
            })
        })
        .build()
        .expect("genai client")
        .traced(&probe);
    Setup {
        server,
        provider,
        probe,
        genai,
    }
}

fn ask(question: &str) -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user(question)]).with_system("Answer briefly")
}

fn options() -> ChatOptions {
    ChatOptions::default()
        .with_temperature(0.25)
        .with_max_tokens(64)
        .with_extra_body(json!({"user": "alice@example.com"}))
}

impl Setup {
    /// Runs `body` inside a trace of its own and returns that trace as the server stored it.
    async fn in_trace<F: std::future::Future>(&self, body: F) -> (F::Output, Value) {
        let trace = self.probe.start_trace("agent-run");
        let id = trace.trace_id();
        let out = trace.in_scope(body).await;
        trace.end();
        drop(trace);
        (out, self.stored(id).await)
    }

    async fn stored(&self, id: pandaprobe::Uuid) -> Value {
        self.probe.flush_async(WAIT).await.expect("flush");
        self.server
            .wait_for_stored_trace(id, WAIT)
            .unwrap_or_else(|| panic!("trace {id} never stored"))
    }
}

fn only_span(trace: &Value) -> &Value {
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 1, "one span: {spans:#?}");
    &spans[0]
}

fn assert_llm_basics(span: &Value) {
    assert_eq!(span["name"], CHAT_SPAN_NAME);
    assert_eq!(span["kind"], "LLM");
    assert_eq!(span["model"], DEFAULT_MODEL);
    assert_eq!(
        span["model_parameters"],
        json!({"temperature": 0.25, "max_tokens": 64}),
        "extra_body (which may name a user) is not a parameter"
    );
    assert_eq!(span["metadata"]["provider"], "openai");
    assert!(span["ended_at"].is_string(), "{span:#?}");
}

/// The fake provider's fixed prompt, cache and reasoning counts, as genai reads them, under
/// PandaProbe's keys.
fn assert_usage(span: &Value) {
    let usage = &span["token_usage"];
    assert_eq!(usage["prompt_tokens"], PROMPT_TOKENS, "{usage}");
    assert_eq!(usage["cache_read_tokens"], CACHED_TOKENS, "{usage}");
    assert_eq!(usage["reasoning_tokens"], REASONING_TOKENS, "{usage}");
    assert!(
        usage["completion_tokens"].as_u64() > Some(REASONING_TOKENS),
        "{usage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_chat_records_messages_answer_usage_and_parameters() {
    let s = setup();
    let options = options();
    let (answer, trace) = s
        .in_trace(
            s.genai
                .exec_chat(DEFAULT_MODEL, ask("What is PandaProbe?"), Some(&options)),
        )
        .await;
    assert_eq!(answer.expect("answer").first_text(), Some(DEFAULT_ANSWER));

    let span = only_span(&trace);
    assert_llm_basics(span);
    assert_eq!(span["status"], "OK");
    assert_eq!(
        span["input"],
        json!({"messages": [
            {"role": "system", "content": "Answer briefly"},
            {"role": "user", "content": "What is PandaProbe?"},
        ]})
    );
    assert_eq!(
        span["output"],
        json!({"role": "assistant", "content": DEFAULT_ANSWER})
    );
    assert_usage(span);
    assert_eq!(span["metadata"]["finish_reason"], "stop");
    assert_eq!(span["metadata"]["stream"], false);
    assert!(span["completion_start_time"].is_null(), "not a stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_assembled_with_usage_and_a_first_chunk_time() {
    let s = setup();
    let options = options();
    let (received, trace) = s
        .in_trace(async {
            let mut stream = s
                .genai
                .exec_chat_stream(DEFAULT_MODEL, ask("Stream it"), Some(&options))
                .await
                .expect("stream");
            let mut text = String::new();
            let mut ended = false;
            while let Some(event) = stream.next().await {
                match event.expect("event") {
                    ChatStreamEvent::Chunk(chunk) => text.push_str(&chunk.content),
                    ChatStreamEvent::End(_) => ended = true,
                    _ => {}
                }
            }
            assert!(ended, "the caller gets genai's end event");
            text
        })
        .await;
    assert_eq!(received, DEFAULT_ANSWER, "the caller gets every chunk");
    assert!(
        s.provider
            .requests()
            .iter()
            .any(|r| r.body["stream_options"]["include_usage"] == true),
        "the wrapper asks for usage"
    );

    let span = only_span(&trace);
    assert_llm_basics(span);
    assert_eq!(span["status"], "OK");
    assert_eq!(span["output"]["content"], DEFAULT_ANSWER);
    assert_usage(span);
    assert_eq!(span["metadata"]["stream"], true);
    let (started, first, ended) = (
        span["started_at"].as_str().expect("started"),
        span["completion_start_time"].as_str().expect("first chunk"),
        span["ended_at"].as_str().expect("ended"),
    );
    // RFC 3339 in one offset compares as text.
    assert!(
        started <= first && first <= ended,
        "{started} {first} {ended}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_and_declared_tools_are_recorded_plain_and_streamed() {
    let s = setup();
    let arguments = r#"{"city":"Paris","unit":"C"}"#;
    s.provider.push(Reply::tool_call("get_weather", arguments));
    s.provider.push(Reply::tool_call("get_weather", arguments));
    let request = ask("Weather?").with_tools(vec![Tool::new("get_weather")
        .with_description("Current weather")
        .with_schema(json!({"type": "object"}))]);
    let (_, trace) = s
        .in_trace(async {
            s.genai
                .exec_chat(DEFAULT_MODEL, request.clone(), None)
                .await
                .expect("plain");
            let stream = s.genai.exec_chat_stream(DEFAULT_MODEL, request, None);
            stream.await.expect("stream").collect::<Vec<_>>().await
        })
        .await;
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    for span in spans {
        assert_eq!(span["status"], "OK", "{span:#?}");
        assert_eq!(span["input"]["tools"][0]["function"]["name"], "get_weather");
        let call = &span["output"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let parsed: Value = serde_json::from_str(
            call["function"]["arguments"]
                .as_str()
                .expect("arguments text"),
        )
        .expect("arguments are JSON");
        assert_eq!(parsed, json!({"city": "Paris", "unit": "C"}));
        assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(span["metadata"]["finish_reason"], "tool_calls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_ends_the_span_as_an_error_with_keys_masked() {
    let s = setup();
    s.provider.push(Reply::error(
        401,
        format!("Incorrect API key provided: {PROVIDER_KEY}."),
    ));
    let (result, trace) = s
        .in_trace(s.genai.exec_chat(DEFAULT_MODEL, ask("hi"), None))
        .await;
    assert!(result.is_err());
    let span = only_span(&trace);
    assert_eq!(span["status"], "ERROR");
    let error = span["error"].as_str().expect("error text");
    assert!(error.contains("Incorrect API key provided"), "{error}");
    assert!(
        !trace.to_string().contains("0123456789"),
        "the key is masked: {error}"
    );
    assert!(span["output"].is_null());
    assert_eq!(span["input"]["messages"][1]["content"], "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_is_an_error_that_keeps_what_arrived() {
    let s = setup();
    s.provider.push(Reply::CutAfterChunks(3));
    let (items, trace) = s
        .in_trace(async {
            let stream = s.genai.exec_chat_stream(DEFAULT_MODEL, ask("hi"), None);
            stream.await.expect("stream").collect::<Vec<_>>().await
        })
        .await;
    assert!(
        !items
            .iter()
            .any(|i| matches!(i, Ok(ChatStreamEvent::End(_)))),
        "a cut stream has no end event"
    );
    let span = only_span(&trace);
    assert_eq!(span["status"], "ERROR", "{span:#?}");
    let error = span["error"].as_str().expect("error text");
    assert!(error.contains("stream failed after"), "{error}");
    let partial = span["output"]["content"].as_str().expect("partial output");
    assert!(
        !partial.is_empty() && DEFAULT_ANSWER.starts_with(partial) && partial != DEFAULT_ANSWER,
        "what arrived, not the whole answer: {partial:?}"
    );
    assert!(span["completion_start_time"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_before_its_end_is_an_error_that_keeps_what_arrived() {
    let s = setup();
    let (first, trace) = s
        .in_trace(async {
            let mut stream = s
                .genai
                .exec_chat_stream(DEFAULT_MODEL, ask("hi"), None)
                .await
                .expect("stream");
            loop {
                match stream.next().await.expect("an event").expect("ok") {
                    ChatStreamEvent::Chunk(chunk) => return chunk.content,
                    _ => continue,
                }
            }
        })
        .await;
    let span = only_span(&trace);
    assert_eq!(span["status"], "ERROR");
    assert!(
        span["error"]
            .as_str()
            .is_some_and(|e| e.contains("dropped")),
        "{span:#?}"
    );
    assert_eq!(span["output"]["content"], first.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_capture_off_no_content_leaves_but_model_usage_and_timing_do() {
    let s = setup();
    let quiet = s.genai.clone().capture_content(false);
    s.provider
        .push(Reply::tool_call("lookup", r#"{"q":"secret"}"#));
    let (_, trace) = s
        .in_trace(async {
            quiet
                .exec_chat(DEFAULT_MODEL, ask("my secret question"), None)
                .await
                .expect("plain");
            let stream = quiet.exec_chat_stream(DEFAULT_MODEL, ask("my secret question"), None);
            stream.await.expect("stream").collect::<Vec<_>>().await;
            quiet
                .embed("fake-embedding", "secret text", None)
                .await
                .expect("embed");
        })
        .await;
    let text = trace.to_string();
    assert!(
        !text.contains("secret"),
        "no prompt, no tool arguments: {text}"
    );
    assert!(!text.contains(DEFAULT_ANSWER), "no answer: {text}");
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 3);
    for span in spans {
        assert!(
            span["input"].is_null() && span["output"].is_null(),
            "{span:#?}"
        );
        assert!(
            span["token_usage"]["prompt_tokens"].as_u64().is_some(),
            "{span:#?}"
        );
        assert_eq!(span["status"], "OK");
    }
    assert_eq!(spans[0]["model"], DEFAULT_MODEL);
    assert!(spans[1]["completion_start_time"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outside_any_trace_opens_a_trace_of_its_own() {
    let s = setup();
    s.genai
        .exec_chat(DEFAULT_MODEL, ask("alone"), None)
        .await
        .expect("answer");
    s.probe.flush_async(WAIT).await.expect("flush");
    let traces = s.server.traces();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].body["name"], CHAT_SPAN_NAME);
    let trace = s.stored(traces[0].id).await;
    assert_eq!(only_span(&trace)["kind"], "LLM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_record_the_input_and_counts_never_the_vectors() {
    let s = setup();
    let inputs = vec!["first text".to_owned(), "second text".to_owned()];
    let (response, trace) = s
        .in_trace(s.genai.embed_batch("fake-embedding", inputs, None))
        .await;
    let response = response.expect("embeddings");
    let span = only_span(&trace);
    assert_eq!(span["name"], EMBED_SPAN_NAME);
    assert_eq!(span["kind"], "EMBEDDING");
    assert_eq!(span["status"], "OK");
    assert_eq!(span["input"]["input"], json!(["first text", "second text"]));
    assert_eq!(span["output"]["embeddings"], response.embeddings.len());
    assert_eq!(
        span["output"]["dimensions"],
        response.embeddings[0].vector.len()
    );
    assert!(span["token_usage"]["prompt_tokens"].as_u64().is_some());
}
