use pandaprobe_fake_provider::{
    FakeProvider, Reply, CACHED_TOKENS, DEFAULT_ANSWER, REASONING_TOKENS,
};
use serde_json::{json, Value};

async fn post(provider: &FakeProvider, path: &str, body: Value) -> reqwest::Result<(u16, String)> {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", provider.base_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn scripted_answers_in_order_then_default_and_requests_recorded() {
    let provider = FakeProvider::start().unwrap();
    provider.push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
    provider.push(Reply::text("Sunny."));
    let req = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]});
    let (status, first) = post(&provider, "/chat/completions", req.clone())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["model"], "gpt-test");
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        first["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let (_, second) = post(&provider, "/chat/completions", req.clone())
        .await
        .unwrap();
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["choices"][0]["message"]["content"], "Sunny.");
    assert_eq!(second["usage"]["prompt_tokens"], 12);
    let (_, third) = post(&provider, "/chat/completions", req.clone())
        .await
        .unwrap();
    let third: Value = serde_json::from_str(&third).unwrap();
    assert_eq!(third["choices"][0]["message"]["content"], DEFAULT_ANSWER);
    let requests = provider.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].body, req);
}

#[tokio::test]
async fn stream_with_usage_in_last_chunk_and_done() {
    let provider = FakeProvider::start().unwrap();
    provider.push(Reply::text("one two three"));
    let req = json!({"model": "m", "messages": [], "stream": true,
        "stream_options": {"include_usage": true}});
    let (status, text) = post(&provider, "/chat/completions", req).await.unwrap();
    assert_eq!(status, 200);
    let events = sse_events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "one two three");
    let last = chunks.last().unwrap();
    let usage = &last["usage"];
    assert_eq!(
        usage["completion_tokens"],
        3 + REASONING_TOKENS,
        "words and reasoning"
    );
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"],
        CACHED_TOKENS
    );
    assert_eq!(
        usage["completion_tokens_details"]["reasoning_tokens"],
        REASONING_TOKENS
    );
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));
}

#[tokio::test]
async fn streamed_tool_call_fragments_concatenate() {
    let provider = FakeProvider::start().unwrap();
    provider.push(Reply::tool_call("lookup", r#"{"q":"rust"}"#));
    let req = json!({"model": "m", "messages": [], "stream": true});
    let (_, text) = post(&provider, "/chat/completions", req).await.unwrap();
    let args: String = sse_events(&text)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(args, r#"{"q":"rust"}"#);
}

#[tokio::test]
async fn errors_and_cut_streams() {
    let provider = FakeProvider::start().unwrap();
    provider.push(Reply::error(429, "slow down"));
    provider.push(Reply::CutAfterChunks(2));
    let req = json!({"model": "m", "messages": [], "stream": true});
    let (status, text) = post(&provider, "/chat/completions", req.clone())
        .await
        .unwrap();
    assert_eq!(status, 429);
    assert!(text.contains("slow down"));
    let mut response = reqwest::Client::new()
        .post(format!("{}/chat/completions", provider.base_url()))
        .body(req.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut received = Vec::new();
    let end = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(end.is_err(), "a cut stream must end in an error");
    let received = String::from_utf8(received).unwrap();
    assert!(
        received.contains("Hello"),
        "chunks before the cut arrive: {received}"
    );
    assert!(!received.contains("[DONE]"));
}

#[tokio::test]
async fn embeddings_one_vector_per_input() {
    let provider = FakeProvider::start().unwrap();
    let req = json!({"model": "emb", "input": ["a", "b"]});
    let (status, text) = post(&provider, "/embeddings", req).await.unwrap();
    assert_eq!(status, 200);
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["data"].as_array().unwrap().len(), 2);
    assert_eq!(value["model"], "emb");
}
