//! An offline fake of an OpenAI-compatible provider, served on `127.0.0.1:0` from its own
//! thread and runtime, so tests and examples of LLM integrations need no network and no key.
//!
//! Answers come from a script queue ([`FakeProvider::push`]): an agent loop gets "call tool X"
//! and then a final answer. When the queue is empty the answer is [`DEFAULT_ANSWER`]. Chat
//! completions (`/v1/chat/completions`) and the Responses API (`/v1/responses`) read the same
//! script, plain or streamed; embeddings (`/v1/embeddings`) answer vectors of four numbers.
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
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

mod answers;
mod reply;
mod responses;

use answers::{chat, embeddings, json_response, stream_chat, Body};

pub use reply::{
    Reply, CACHED_TOKENS, DEFAULT_ANSWER, DEFAULT_MODEL, PROMPT_TOKENS, REASONING_TOKENS,
};

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
        let reply = if path == "/v1/chat/completions" || path == "/v1/responses" {
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
        "/v1/responses" => {
            let reply = reply.unwrap_or_else(|| Reply::text(DEFAULT_ANSWER));
            if request.get("stream").and_then(Value::as_bool) == Some(true) {
                responses::stream_respond(&reply, &model, id)
            } else {
                responses::respond(&reply, &model, id)
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
