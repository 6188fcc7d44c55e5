//! The spans that reach the test server for chat completions and embeddings made through the
//! traced client against the offline fake provider: plain, streamed, tool calls, errors, cut
//! and dropped streams, content capture off, and which trace a call joins.

mod common;

use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use common::{assert_usage, only_span, setup, PROVIDER_KEY, WAIT};
use futures_util::StreamExt;
use pandaprobe_async_openai::CHAT_SPAN_NAME;
use pandaprobe_fake_provider::{Reply, DEFAULT_ANSWER, DEFAULT_MODEL, PROMPT_TOKENS};
use serde_json::{json, Value};

fn ask(question: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(DEFAULT_MODEL)
        .temperature(0.25)
        .max_completion_tokens(64u32)
        .user("alice@example.com")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(question)
            .build()
            .expect("message")
            .into()])
        .build()
        .expect("request")
}

fn with_usage(mut request: CreateChatCompletionRequest) -> CreateChatCompletionRequest {
    request.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    });
    request
}

fn assert_llm_basics(span: &Value) {
    assert_eq!(span["name"], CHAT_SPAN_NAME);
    assert_eq!(span["kind"], "LLM");
    assert_eq!(span["model"], DEFAULT_MODEL);
    assert_eq!(
        span["model_parameters"],
        json!({"temperature": 0.25, "max_completion_tokens": 64}),
        "the request's `user` is not a parameter"
    );
    assert_eq!(span["metadata"]["provider"], "openai");
    assert!(span["ended_at"].is_string(), "{span:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_chat_completion_records_messages_answer_usage_and_parameters() {
    let s = setup();
    let (answer, trace) = s
        .in_trace(s.openai.chat().create(ask("What is PandaProbe?")))
        .await;
    let answer = answer.expect("answer");
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some(DEFAULT_ANSWER)
    );

    let span = only_span(&trace);
    assert_llm_basics(span);
    assert_eq!(span["status"], "OK");
    assert_eq!(
        span["input"],
        json!({"messages": [{"role": "user", "content": "What is PandaProbe?"}]})
    );
    assert_eq!(span["output"]["role"], "assistant");
    assert_eq!(span["output"]["content"], DEFAULT_ANSWER);
    assert_usage(span);
    assert_eq!(span["metadata"]["finish_reasons"], json!(["stop"]));
    assert_eq!(span["metadata"]["stream"], false);
    assert!(span["completion_start_time"].is_null(), "not a stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_assembled_with_usage_from_the_last_chunk_and_a_first_token_time() {
    let s = setup();
    let (received, trace) = s
        .in_trace(async {
            let mut stream = s
                .openai
                .chat()
                .create_stream(with_usage(ask("Stream it")))
                .await
                .expect("stream");
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.expect("chunk");
                if let Some(choice) = chunk.choices.first() {
                    text.push_str(choice.delta.content.as_deref().unwrap_or(""));
                }
            }
            text
        })
        .await;
    assert_eq!(
        received, DEFAULT_ANSWER,
        "the caller gets every chunk unchanged"
    );

    let span = only_span(&trace);
    assert_llm_basics(span);
    assert_eq!(span["status"], "OK");
    assert_eq!(span["output"]["content"], DEFAULT_ANSWER);
    assert_usage(span);
    assert_eq!(span["metadata"]["stream"], true);
    let (started, first, ended) = (
        span["started_at"].as_str().expect("started"),
        span["completion_start_time"]
            .as_str()
            .expect("first token time"),
        span["ended_at"].as_str().expect("ended"),
    );
    // RFC 3339 in one offset compares as text.
    assert!(
        started <= first && first <= ended,
        "{started} {first} {ended}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_tool_call_fragments_are_joined_into_one_call() {
    let s = setup();
    s.provider.push(Reply::tool_call(
        "get_weather",
        r#"{"city":"Paris","unit":"C"}"#,
    ));
    let (_, trace) = s
        .in_trace(async {
            let stream = s.openai.chat().create_stream(ask("Weather?")).await;
            stream.expect("stream").collect::<Vec<_>>().await
        })
        .await;
    let span = only_span(&trace);
    assert_eq!(span["status"], "OK");
    let call = &span["output"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        call["function"]["arguments"],
        r#"{"city":"Paris","unit":"C"}"#
    );
    assert!(call["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("call_")));
    assert_eq!(span["metadata"]["finish_reasons"], json!(["tool_calls"]));
    assert!(span["token_usage"].is_null(), "usage was not asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_ends_the_span_as_an_error_with_keys_masked() {
    let s = setup();
    s.provider.push(Reply::error(
        401,
        format!("Incorrect API key provided: {PROVIDER_KEY}."),
    ));
    let (result, trace) = s.in_trace(s.openai.chat().create(ask("hi"))).await;
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
    assert_eq!(span["input"]["messages"][0]["content"], "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_is_an_error_that_keeps_what_arrived() {
    let s = setup();
    s.provider.push(Reply::CutAfterChunks(3));
    let (items, trace) = s
        .in_trace(async {
            let stream = s.openai.chat().create_stream(ask("hi")).await;
            stream.expect("stream").collect::<Vec<_>>().await
        })
        .await;
    assert!(items.iter().any(|i| i.is_err()), "the caller sees the cut");
    let span = only_span(&trace);
    assert_eq!(span["status"], "ERROR");
    assert!(span["error"]
        .as_str()
        .is_some_and(|e| e.contains("stream failed")));
    let partial = span["output"]["content"].as_str().expect("partial output");
    let first_three: String = DEFAULT_ANSWER.split_inclusive(' ').take(3).collect();
    assert_eq!(partial.trim_end(), first_three.trim_end());
    assert!(span["completion_start_time"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_before_its_end_is_an_error_that_keeps_what_arrived() {
    let s = setup();
    let (_, trace) = s
        .in_trace(async {
            let mut stream = s
                .openai
                .chat()
                .create_stream(ask("hi"))
                .await
                .expect("stream");
            // The role chunk, then the first word.
            stream.next().await.expect("role chunk").expect("ok");
            stream.next().await.expect("first word").expect("ok");
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
    let first_word = DEFAULT_ANSWER.split(' ').next().expect("a word");
    assert_eq!(span["output"]["content"], first_word);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_capture_off_no_content_leaves_but_model_usage_and_timing_do() {
    let s = setup();
    let quiet = s.openai.clone().capture_content(false);
    s.provider
        .push(Reply::tool_call("lookup", r#"{"q":"secret"}"#));
    let (_, trace) = s
        .in_trace(async {
            quiet
                .chat()
                .create(ask("my secret question"))
                .await
                .expect("plain");
            let chat = quiet.chat();
            let stream = chat.create_stream(with_usage(ask("my secret question")));
            stream.await.expect("stream").collect::<Vec<_>>().await;
        })
        .await;
    let text = trace.to_string();
    assert!(
        !text.contains("secret"),
        "no prompt, no tool arguments: {text}"
    );
    assert!(!text.contains(DEFAULT_ANSWER), "no answer: {text}");
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    for span in spans {
        assert!(
            span["input"].is_null() && span["output"].is_null(),
            "{span:#?}"
        );
        assert_eq!(span["model"], DEFAULT_MODEL);
        assert_eq!(span["token_usage"]["prompt_tokens"], PROMPT_TOKENS);
        assert_eq!(span["status"], "OK");
    }
    assert!(spans[1]["completion_start_time"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outside_any_trace_opens_a_trace_of_its_own() {
    let s = setup();
    s.openai.chat().create(ask("alone")).await.expect("answer");
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
    let request = CreateEmbeddingRequestArgs::default()
        .model("fake-embedding")
        .input(["first text", "second text"])
        .build()
        .expect("request");
    let (response, trace) = s.in_trace(s.openai.embeddings().create(request)).await;
    let response = response.expect("embeddings");
    let span = only_span(&trace);
    assert_eq!(span["kind"], "EMBEDDING");
    assert_eq!(span["status"], "OK");
    assert_eq!(span["input"]["input"], json!(["first text", "second text"]));
    assert_eq!(span["output"]["embeddings"], response.data.len());
    assert_eq!(
        span["output"]["dimensions"],
        response.data[0].embedding.len()
    );
    assert!(span["token_usage"]["prompt_tokens"].as_u64().is_some());
}
