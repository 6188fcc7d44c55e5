//! An offline fake of an OpenAI-compatible provider, served on `127.0.0.1:0` from its own
//! thread and runtime, so tests and examples of LLM integrations need no network and no key.
//!
//! Answers come from a script queue ([`FakeProvider::push`]): an agent loop gets "call tool X"
//! and then a final answer. When the queue is empty the answer is [`DEFAULT_ANSWER`].
//!
//! ```
//! use pandaprobe_fake_provider::{FakeProvider, Reply};
//!
//! let provider = FakeProvider::start().unwrap();
//! provider.push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
//! provider.push(Reply::text("It is sunny in Paris."));
//! // Point an OpenAI client at `provider.base_url()` (it ends in `/v1`).
//! assert!(provider.base_url().ends_with("/v1"));
//! assert!(provider.requests().is_empty());
//! ```
#![warn(missing_docs)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The answer given when the script queue is empty.
pub const DEFAULT_ANSWER: &str = "Hello from the fake provider.";

/// The model named in answers when the request names none.
pub const DEFAULT_MODEL: &str = "fake-model";

/// The prompt token count every answer reports.
pub const PROMPT_TOKENS: u64 = 12;

/// One scripted answer to a chat completion request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// An assistant message with this content; streamed word by word when asked to stream.
    Text(String),
    /// An assistant message calling one tool with these JSON arguments (a string, as OpenAI
    /// sends them); streamed as `delta.tool_calls` fragments when asked to stream.
    ToolCall {
        /// The function's name.
        name: String,
        /// The arguments, as a JSON text.
        arguments: String,
    },
    /// An HTTP error answer in OpenAI's error shape.
    Error {
        /// The HTTP status, e.g. 429 or 500.
        status: u16,
        /// The error message.
        message: String,
    },
    /// An answer cut midway: a stream sends this many content chunks of [`DEFAULT_ANSWER`],
    /// then the connection is cut; a non-streamed request gets its connection cut at once.
    CutAfterChunks(usize),
}

impl Reply {
    /// A text answer.
    pub fn text(content: impl Into<String>) -> Reply {
        Reply::Text(content.into())
    }

    /// A tool-call answer.
    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Reply {
        Reply::ToolCall {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    /// An HTTP error answer.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::Error {
            status,
            message: message.into(),
        }
    }
}

/// A request the provider received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The request body as JSON (`Value::Null` when it was not JSON).
    pub body: Value,
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    requests: Vec<RecordedRequest>,
    next_id: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide later requests from the other tests' asserts.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running fake provider; stops when dropped.
pub struct FakeProvider {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeProvider {
    /// Starts the provider on `127.0.0.1:0` on a thread of its own.
    pub fn start() -> io::Result<FakeProvider> {
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("pandaprobe-fake-provider".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(serve(thread_state, stopped, ready_tx));
            })?;
        let addr = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the fake provider thread died"))??;
        Ok(FakeProvider {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues an answer for the next chat completion request.
    pub fn push(&self, reply: Reply) {
        lock(&self.state).script.push_back(reply);
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;

async fn serve(
    state: Arc<Mutex<State>>,
    mut stopped: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<io::Result<SocketAddr>>,
) {
    let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    match listener.local_addr() {
        Ok(addr) => {
            let _ = ready.send(Ok(addr));
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    }
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

fn body(frames: Vec<Result<Frame<Bytes>, io::Error>>) -> Body {
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// The data frames, then a cut: the yield first lets hyper flush what was sent, so the
/// client really receives the chunks before the connection breaks.
fn body_then_cut(frames: Vec<Result<Frame<Bytes>, io::Error>>) -> Body {
    use futures_util::StreamExt;
    let cut = futures_util::stream::once(async {
        tokio::task::yield_now().await;
        cut()
    });
    BodyExt::boxed(StreamBody::new(
        futures_util::stream::iter(frames).chain(cut),
    ))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(body(vec![Ok(Frame::data(Bytes::from(value.to_string())))]));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn cut() -> Result<Frame<Bytes>, io::Error> {
    Err(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "cut by the script",
    ))
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let bytes = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let request: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (reply, id) = {
        let mut state = lock(&state);
        state.requests.push(RecordedRequest {
            path: path.clone(),
            body: request.clone(),
        });
        state.next_id += 1;
        let reply = if path == "/v1/chat/completions" {
            state.script.pop_front()
        } else {
            None
        };
        (reply, state.next_id)
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL)
        .to_owned();
    let response = match path.as_str() {
        "/v1/chat/completions" => {
            let reply = reply.unwrap_or_else(|| Reply::text(DEFAULT_ANSWER));
            let stream = request
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let usage = request
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if stream {
                stream_chat(&reply, &model, id, usage)
            } else {
                chat(&reply, &model, id)
            }
        }
        "/v1/embeddings" => embeddings(&request, &model),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": format!("no route {path}"), "type": "not_found"}}),
        ),
    };
    Ok(response)
}

fn usage(completion: u64) -> Value {
    json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    })
}

fn words(content: &str) -> Vec<String> {
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

fn error_response(status: u16, message: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        &json!({"error": {"message": message, "type": "fake_error", "code": status.as_u16()}}),
    )
}

fn chat(reply: &Reply, model: &str, id: u64) -> Response<Body> {
    let (message, finish, completion) = match reply {
        Reply::Text(content) => (
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

fn stream_chat(reply: &Reply, model: &str, id: u64, include_usage: bool) -> Response<Body> {
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
        Reply::Text(content) => {
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

fn with_sse_type(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn embeddings(request: &Value, model: &str) -> Response<Body> {
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
