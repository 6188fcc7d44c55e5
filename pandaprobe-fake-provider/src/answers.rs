//! The HTTP answers: chat completions plain and streamed, errors, cut streams, embeddings.

use std::io;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::reply::{Reply, CACHED_TOKENS, DEFAULT_ANSWER, PROMPT_TOKENS, REASONING_TOKENS};

/// A streamed or whole answer body.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;

pub(crate) fn body(frames: Vec<Result<Frame<Bytes>, io::Error>>) -> Body {
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// The data frames, then a cut: the yield first lets hyper flush what was sent, so the
/// client really receives the chunks before the connection breaks.
pub(crate) fn body_then_cut(frames: Vec<Result<Frame<Bytes>, io::Error>>) -> Body {
    use futures_util::StreamExt;
    let cut = futures_util::stream::once(async {
        tokio::task::yield_now().await;
        cut()
    });
    BodyExt::boxed(StreamBody::new(
        futures_util::stream::iter(frames).chain(cut),
    ))
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(body(vec![Ok(Frame::data(Bytes::from(value.to_string())))]));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn cut() -> Result<Frame<Bytes>, io::Error> {
    Err(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "cut by the script",
    ))
}

/// OpenAI's usage object for an answer of `words` words.
fn usage(words: u64) -> Value {
    let completion = words + REASONING_TOKENS;
    json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": REASONING_TOKENS, "audio_tokens": 0},
    })
}

pub(crate) fn words(content: &str) -> Vec<String> {
    // Each chunk keeps its leading space so the chunks concatenate back to the content.
    let mut chunks = Vec::new();
    for (i, word) in content.split(' ').enumerate() {
        chunks.push(if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        });
    }
    chunks
}

pub(crate) fn error_response(status: u16, message: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        &json!({"error": {"message": message, "type": "fake_error", "code": status.as_u16()}}),
    )
}

pub(crate) fn chat(reply: &Reply, model: &str, id: u64) -> Response<Body> {
    let (message, finish, completion) = match reply {
        // Chat completions have no built-in tools: a web search answers with its text.
        Reply::Text(content)
        | Reply::WebSearch {
            answer: content, ..
        } => (
            json!({"role": "assistant", "content": content}),
            "stop",
            words(content).len() as u64,
        ),
        Reply::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": format!("call_{id}"), "type": "function",
                "function": {"name": name, "arguments": arguments}}]}),
            "tool_calls",
            5,
        ),
        Reply::Error { status, message } => return error_response(*status, message),
        Reply::CutAfterChunks(_) => return Response::new(body(vec![cut()])),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
            "usage": usage(completion),
        }),
    )
}

pub(crate) fn stream_chat(
    reply: &Reply,
    model: &str,
    id: u64,
    include_usage: bool,
) -> Response<Body> {
    let chunk = |delta: Value, finish: Value| {
        let mut value = json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        if include_usage {
            value["usage"] = Value::Null;
        }
        value
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let (finish, completion, cut_after) = match reply {
        // Chat completions have no built-in tools: a web search answers with its text.
        Reply::Text(content)
        | Reply::WebSearch {
            answer: content, ..
        } => {
            let parts = words(content);
            let n = parts.len() as u64;
            events.extend(
                parts
                    .into_iter()
                    .map(|p| chunk(json!({"content": p}), Value::Null)),
            );
            ("stop", n, None)
        }
        Reply::ToolCall { name, arguments } => {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": format!("call_{id}"), "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            // Split the arguments in two fragments, as providers do.
            let mid = arguments
                .char_indices()
                .nth(arguments.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            for part in [&arguments[..mid], &arguments[mid..]] {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
            ("tool_calls", 5, None)
        }
        Reply::Error { status, message } => return error_response(*status, message),
        Reply::CutAfterChunks(n) => {
            let parts = words(DEFAULT_ANSWER);
            events.extend(
                parts
                    .into_iter()
                    .take(*n)
                    .map(|p| chunk(json!({"content": p}), Value::Null)),
            );
            ("stop", 0, Some(()))
        }
    };
    let mut frames: Vec<Result<Frame<Bytes>, io::Error>> = events
        .iter()
        .map(|e| Ok(Frame::data(Bytes::from(format!("data: {e}\n\n")))))
        .collect();
    if cut_after.is_some() {
        return with_sse_type(body_then_cut(frames));
    } else {
        let last = chunk(json!({}), json!(finish));
        frames.push(Ok(Frame::data(Bytes::from(format!("data: {last}\n\n")))));
        if include_usage {
            let mut usage_chunk = chunk(json!({}), Value::Null);
            usage_chunk["choices"] = json!([]);
            usage_chunk["usage"] = usage(completion);
            frames.push(Ok(Frame::data(Bytes::from(format!(
                "data: {usage_chunk}\n\n"
            )))));
        }
        frames.push(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))));
    }
    with_sse_type(body(frames))
}

pub(crate) fn with_sse_type(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    response
}

pub(crate) fn embeddings(request: &Value, model: &str) -> Response<Body> {
    let inputs = match request.get("input") {
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, i as f64]}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}}),
    )
}
