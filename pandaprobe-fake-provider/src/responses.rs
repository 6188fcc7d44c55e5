//! The Responses API (`POST /v1/responses`): a whole response, or its server-sent events
//! (`response.created`, text or function-call argument deltas, `response.completed` with the
//! whole response and its usage), from the same script as chat completions.

use bytes::Bytes;
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::answers::{
    body, body_then_cut, cut, error_response, json_response, with_sse_type, words, Body,
};
use crate::reply::{Reply, CACHED_TOKENS, DEFAULT_ANSWER, PROMPT_TOKENS, REASONING_TOKENS};

/// The output items of a reply and how many tokens they are.
fn output_items(reply: &Reply, id: u64) -> (Vec<Value>, u64) {
    match reply {
        Reply::ToolCall { name, arguments } => (
            vec![
                json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": format!("call_{id}"),
                   "name": name, "arguments": arguments, "status": "completed"}),
            ],
            5,
        ),
        Reply::WebSearch { query, answer } => (
            vec![
                json!({"type": "web_search_call", "id": format!("ws_{id}"), "status": "completed",
                       "action": {"type": "search", "query": query, "queries": [query],
                                  "sources": [{"type": "url", "url": "https://example.com/"}]}}),
                message(answer, id),
            ],
            words(answer).len() as u64,
        ),
        Reply::Text(text) => (vec![message(text, id)], words(text).len() as u64),
        _ => (
            vec![message(DEFAULT_ANSWER, id)],
            words(DEFAULT_ANSWER).len() as u64,
        ),
    }
}

fn message(text: &str, id: u64) -> Value {
    json!({"type": "message", "id": format!("msg_{id}"), "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn response(
    model: &str,
    id: u64,
    status: &str,
    output: Vec<Value>,
    completion: Option<u64>,
) -> Value {
    let usage = completion.map(|words| {
        let completion = words + REASONING_TOKENS;
        json!({"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
               "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
               "total_tokens": PROMPT_TOKENS + completion})
    });
    json!({"id": format!("resp_{id}"), "object": "response", "created_at": 1_700_000_000,
           "model": model, "status": status, "output": output, "usage": usage})
}

/// A whole response.
pub(crate) fn respond(reply: &Reply, model: &str, id: u64) -> Response<Body> {
    match reply {
        Reply::Error { status, message } => error_response(*status, message),
        Reply::CutAfterChunks(_) => Response::new(body(vec![cut()])),
        _ => {
            let (items, completion) = output_items(reply, id);
            json_response(
                StatusCode::OK,
                &response(model, id, "completed", items, Some(completion)),
            )
        }
    }
}

/// A response as server-sent events; a [`Reply::CutAfterChunks`] stops after that many text
/// deltas and cuts the connection.
pub(crate) fn stream_respond(reply: &Reply, model: &str, id: u64) -> Response<Body> {
    if let Reply::Error { status, message } = reply {
        return error_response(*status, message);
    }
    let mut sequence = 0;
    let mut frames = Vec::new();
    let mut event = |kind: &str, mut value: Value| {
        value["type"] = json!(kind);
        value["sequence_number"] = json!(sequence);
        sequence += 1;
        Ok(Frame::data(Bytes::from(format!(
            "event: {kind}\ndata: {value}\n\n"
        ))))
    };
    frames.push(event(
        "response.created",
        json!({"response": response(model, id, "in_progress", vec![], None)}),
    ));
    let (items, completion) = output_items(reply, id);
    match reply {
        Reply::ToolCall { arguments, .. } => {
            let mid = arguments
                .char_indices()
                .nth(arguments.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            for piece in [&arguments[..mid], &arguments[mid..]] {
                frames.push(event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": format!("fc_{id}"), "output_index": 0, "delta": piece}),
                ));
            }
        }
        _ => {
            let limit = match reply {
                Reply::CutAfterChunks(n) => *n,
                _ => usize::MAX,
            };
            // The message is the last item (after a web search's call).
            let index = items.len().saturating_sub(1);
            let text = items[index]["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for delta in words(&text).into_iter().take(limit) {
                frames.push(event(
                    "response.output_text.delta",
                    json!({"item_id": format!("msg_{id}"), "output_index": index,
                           "content_index": 0, "delta": delta}),
                ));
            }
            if let Reply::CutAfterChunks(_) = reply {
                return with_sse_type(body_then_cut(frames));
            }
        }
    }
    frames.push(event(
        "response.completed",
        json!({"response": response(model, id, "completed", items, Some(completion))}),
    ));
    with_sse_type(body(frames))
}
