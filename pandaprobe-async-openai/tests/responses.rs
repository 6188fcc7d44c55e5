//! The spans that reach the test server for Responses API calls (feature `responses`) made
//! through the traced client against the offline fake provider: plain, streamed, a tool call,
//! an error, a stream cut midway, and content capture off.
#![cfg(feature = "responses")]

mod common;

use async_openai::types::responses::{CreateResponse, CreateResponseArgs, ResponseStreamEvent};
use common::{assert_usage, only_span, setup, Setup, PROVIDER_KEY};
use futures_util::StreamExt;
use pandaprobe_async_openai::RESPONSES_SPAN_NAME;
use pandaprobe_fake_provider::{Reply, DEFAULT_ANSWER, DEFAULT_MODEL, PROMPT_TOKENS};
use serde_json::{json, Value};

fn ask(question: &str) -> CreateResponse {
    CreateResponseArgs::default()
        .model(DEFAULT_MODEL)
        .instructions("Answer briefly")
        .input(question)
        .temperature(0.25)
        .max_output_tokens(64u32)
        .safety_identifier("alice@example.com")
        .build()
        .expect("request")
}

impl Setup {
    /// Runs `body` inside a trace of its own and returns that trace's spans as stored.
    async fn spans<F: std::future::Future>(&self, body: F) -> (F::Output, Vec<Value>) {
        let (out, stored) = self.in_trace(body).await;
        (out, stored["spans"].as_array().expect("spans").clone())
    }

    /// Streams a response to its end and returns its text deltas, joined.
    async fn stream_text(&self, request: CreateResponse) -> String {
        let responses = self.openai.responses();
        let mut stream = responses.create_stream(request).await.expect("stream");
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            if let ResponseStreamEvent::ResponseOutputTextDelta(delta) = event.expect("event") {
                text.push_str(&delta.delta);
            }
        }
        text
    }

    /// Runs `body` inside a trace of its own and returns that trace's one span as stored.
    async fn only_span<F: std::future::Future>(&self, body: F) -> (F::Output, Value) {
        let (out, stored) = self.in_trace(body).await;
        (out, only_span(&stored).clone())
    }
}

/// The response's span and its one child, as stored.
fn llm_and_tool(spans: &[Value]) -> (&Value, &Value) {
    assert_eq!(spans.len(), 2, "the call and its tool: {spans:#?}");
    let llm = spans
        .iter()
        .find(|s| s["kind"] == "LLM")
        .expect("the LLM span");
    let tool = spans
        .iter()
        .find(|s| s["kind"] == "TOOL")
        .expect("the TOOL span");
    assert_eq!(tool["parent_span_id"], llm["span_id"], "under the call");
    (llm, tool)
}

fn assert_basics(span: &Value) {
    assert_eq!(span["name"], RESPONSES_SPAN_NAME);
    assert_eq!(span["kind"], "LLM");
    assert_eq!(span["model"], DEFAULT_MODEL);
    assert_eq!(
        span["model_parameters"],
        json!({"temperature": 0.25, "max_output_tokens": 64}),
        "the safety identifier (a user) is not a parameter"
    );
    assert_eq!(span["metadata"]["provider"], "openai");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_response_records_messages_output_usage_and_parameters() {
    let s = setup();
    let (response, span) = s.only_span(s.openai.responses().create(ask("Hi?"))).await;
    assert_eq!(
        response.expect("response").output_text().as_deref(),
        Some(DEFAULT_ANSWER)
    );
    assert_basics(&span);
    assert_eq!(span["status"], "OK");
    assert_eq!(
        span["input"],
        json!({"messages": [{"role": "system", "content": "Answer briefly"},
                            {"role": "user", "content": "Hi?"}]})
    );
    assert_eq!(
        span["output"],
        json!({"role": "assistant", "content": DEFAULT_ANSWER})
    );
    assert_usage(&span);
    assert!(span["metadata"]["response_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("resp_")));
    assert!(span["completion_start_time"].is_null(), "not a stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_records_the_completed_response_and_a_first_delta_time() {
    let s = setup();
    let (text, span) = s
        .only_span(async { s.stream_text(ask("Stream it")).await })
        .await;
    assert_eq!(text, DEFAULT_ANSWER, "the caller gets every event");
    assert_basics(&span);
    assert_eq!(span["status"], "OK");
    assert_eq!(span["output"]["content"], DEFAULT_ANSWER);
    assert_usage(&span);
    assert_eq!(span["metadata"]["stream"], true);
    let (started, first, ended) = (
        span["started_at"].as_str().expect("started"),
        span["completion_start_time"].as_str().expect("first delta"),
        span["ended_at"].as_str().expect("ended"),
    );
    assert!(
        started <= first && first <= ended,
        "{started} {first} {ended}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_call_is_recorded_as_a_tool_call_plain_and_streamed() {
    let s = setup();
    for stream in [false, true] {
        s.provider
            .push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
        let (_, span) = s
            .only_span(async {
                if stream {
                    let events = s.openai.responses().create_stream(ask("Weather?")).await;
                    events.expect("stream").collect::<Vec<_>>().await;
                } else {
                    s.openai
                        .responses()
                        .create(ask("Weather?"))
                        .await
                        .expect("response");
                }
            })
            .await;
        assert_eq!(span["status"], "OK", "{span:#}");
        let call = &span["output"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
        assert!(call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_ends_the_span_as_an_error_with_keys_masked() {
    let s = setup();
    s.provider.push(Reply::error(
        401,
        format!("Incorrect API key provided: {PROVIDER_KEY}."),
    ));
    let (result, span) = s.only_span(s.openai.responses().create(ask("hi"))).await;
    assert!(result.is_err());
    assert_eq!(span["status"], "ERROR");
    let error = span["error"].as_str().expect("error text");
    assert!(error.contains("Incorrect API key provided"), "{error}");
    assert!(
        !span.to_string().contains("0123456789"),
        "the key is masked: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_is_an_error_that_keeps_what_arrived() {
    let s = setup();
    s.provider.push(Reply::CutAfterChunks(2));
    let (items, span) = s
        .only_span(async {
            let stream = s.openai.responses().create_stream(ask("hi")).await;
            stream.expect("stream").collect::<Vec<_>>().await
        })
        .await;
    assert!(items.iter().any(|i| i.is_err()), "the caller sees the cut");
    assert_eq!(span["status"], "ERROR");
    assert!(
        span["error"]
            .as_str()
            .is_some_and(|e| e.contains("stream failed")),
        "{span:#}"
    );
    let first_two: String = DEFAULT_ANSWER.split_inclusive(' ').take(2).collect();
    assert_eq!(
        span["output"]["content"].as_str().map(str::trim_end),
        Some(first_two.trim_end())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_capture_off_no_content_leaves_but_usage_and_timing_do() {
    let s = setup();
    let quiet = s.openai.clone().capture_content(false);
    let (_, span) = s
        .only_span(async {
            let stream = quiet
                .responses()
                .create_stream(ask("my secret question"))
                .await;
            stream.expect("stream").collect::<Vec<_>>().await
        })
        .await;
    let text = span.to_string();
    assert!(
        !text.contains("secret") && !text.contains(DEFAULT_ANSWER),
        "{text}"
    );
    assert!(span["input"].is_null() && span["output"].is_null());
    assert_eq!(span["token_usage"]["prompt_tokens"], PROMPT_TOKENS);
    assert!(span["completion_start_time"].is_string());
    assert_eq!(span["status"], "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_tool_the_provider_ran_is_a_tool_span_under_the_call_plain_and_streamed() {
    let s = setup();
    let answer = "PandaProbe is an observability platform.";
    s.provider
        .push(Reply::web_search("what is pandaprobe", answer));
    s.provider
        .push(Reply::web_search("what is pandaprobe", answer));
    let (_, plain) = s
        .spans(async {
            s.openai
                .responses()
                .create(ask("Search it"))
                .await
                .expect("response")
        })
        .await;
    let (text, streamed) = s
        .spans(async { s.stream_text(ask("Search it")).await })
        .await;
    assert_eq!(text, answer);
    for spans in [&plain, &streamed] {
        let (llm, tool) = llm_and_tool(spans);
        assert_eq!(llm["output"]["content"], answer);
        assert_eq!(tool["name"], "web_search_call");
        assert_eq!(tool["status"], "OK");
        assert_eq!(tool["input"]["action"]["query"], "what is pandaprobe");
        assert_eq!(tool["input"]["action"]["type"], "search");
        assert!(tool["metadata"]["item_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("ws_")));
        assert!(tool["ended_at"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_tool_span_keeps_no_content_with_capture_off_and_a_function_call_gets_none() {
    let s = setup();
    let openai = s.openai.clone().capture_content(false);
    s.provider
        .push(Reply::web_search("a private question", "a private answer"));
    s.provider
        .push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
    let (_, spans) = s
        .spans(async {
            for question in ["Search it", "Weather?"] {
                let response = openai.responses().create(ask(question)).await;
                response.expect("response");
            }
        })
        .await;
    assert_eq!(spans.len(), 3, "two calls, one built-in tool: {spans:#?}");
    let tool = spans
        .iter()
        .find(|s| s["kind"] == "TOOL")
        .expect("the tool");
    assert_eq!(tool["name"], "web_search_call");
    assert!(
        tool["input"].is_null() && tool["output"].is_null(),
        "{tool:#}"
    );
    assert!(!serde_json::to_string(&spans)
        .expect("json")
        .contains("private"));
}
