//! An axum service traced into PandaProbe through `tracing`: each request is one trace, the
//! agent's steps are its spans, and the handler scores the request's trace through
//! [`pandaprobe::current_trace_id`].
//!
//! What one `GET /ask?q=...` records:
//!
//! ```text
//! trace "GET /ask"        tower-http's request span, marked `pandaprobe.trace`; user_id, tags
//! └─ span "run_agent"     AGENT, input and output
//!    ├─ span "retrieve"   RETRIEVER, the documents found
//!    └─ span "call_llm"   LLM, model, token usage, cost; ERROR when the model fails
//! scores                  "answered" (BOOLEAN), and "brevity" (NUMERIC) for an answer
//! ```
//!
//! A question containing `fail` makes the fake model fail: the LLM and agent spans and the
//! trace end with status ERROR and the answer is a 500.

use std::future::Future;
use std::io;

use axum::extract::{Query, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pandaprobe::{Client, Score, Uuid};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use tracing::field::Empty;
use tracing::{instrument, Span};

/// The request header whose value becomes the trace's `user_id`.
pub const USER_HEADER: &str = "x-user-id";

/// The model the fake LLM step reports.
pub const MODEL: &str = "fake-gpt-mini";

/// What the fake retriever knows: a keyword and a document.
const KNOWLEDGE: &[(&str, &str)] = &[
    (
        "rust",
        "Rust is a language empowering everyone to build reliable software.",
    ),
    (
        "tracing",
        "tracing is a framework for instrumenting Rust programs.",
    ),
    (
        "axum",
        "axum is a web framework built on tokio, tower and hyper.",
    ),
];

/// Dollars per token of the fake model.
const PRICE_PER_TOKEN: f64 = 0.000_002;

/// The body of every answer of `GET /ask`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The PandaProbe trace of the request, as [`pandaprobe::current_trace_id`] saw it.
    pub trace_id: Option<Uuid>,
    /// The answer, on success.
    pub answer: Option<String>,
    /// What went wrong, on failure.
    pub error: Option<String>,
}

/// The agent's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentError {
    /// The (fake) model refused the question.
    ModelRefused,
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the model refused to answer")
    }
}

impl std::error::Error for AgentError {}

#[derive(Clone)]
struct AppState {
    client: Client,
}

#[derive(Deserialize)]
struct Ask {
    q: String,
}

/// The service: `GET /ask?q=...`, each request traced as described in the crate docs; scores
/// go through `client`.
pub fn app(client: Client) -> Router {
    Router::new()
        .route("/ask", get(ask))
        .with_state(AppState { client })
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// Serves [`app`] on `listener` until `shutdown` completes, then lets the requests in flight
/// finish: when this returns, every request's span has closed, so its trace is queued.
///
/// # Errors
///
/// An I/O error of the listener.
pub async fn serve<F>(listener: TcpListener, client: Client, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, app(client))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on Ctrl-C, or on SIGTERM on Unix. A signal that cannot be listened for is
/// logged and never completes, so that it cannot stop the service by mistake.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Each request's span, marked as the root of a PandaProbe trace named after the route.
fn request_span<B>(request: &Request<B>) -> Span {
    let user = request
        .headers()
        .get(USER_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("anonymous");
    tracing::info_span!(
        "request",
        pandaprobe.trace = %format!("{} {}", request.method(), request.uri().path()),
        user_id = user,
        tags = "axum-example",
        // Request attributes, not the trace's input (the agent's span holds the question).
        metadata.method = %request.method(),
        metadata.uri = %request.uri(),
    )
}

async fn ask(State(state): State<AppState>, Query(ask): Query<Ask>) -> Response {
    let result = run_agent(&ask.q).await;
    // The request span is current here, so this is the request's trace.
    let trace_id = pandaprobe::current_trace_id();
    if let Some(trace_id) = trace_id {
        score(&state.client, trace_id, &result);
    }
    match result {
        Ok(answer) => Json(Answer {
            trace_id,
            answer: Some(answer),
            error: None,
        })
        .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(Answer {
                trace_id,
                answer: None,
                error: Some(error.to_string()),
            }),
        )
            .into_response(),
    }
}

fn score(client: &Client, trace_id: Uuid, result: &Result<String, AgentError>) {
    let mut scores = vec![Score::boolean(trace_id, "answered", result.is_ok())];
    if let Ok(answer) = result {
        let brevity = 1.0 / (1.0 + answer.split_whitespace().count() as f64 / 20.0);
        scores.push(Score::numeric(trace_id, "brevity", brevity));
    }
    for score in scores {
        // A score refused here is counted in the client's stats; the answer does not wait.
        if let Err(error) = client.score(score) {
            tracing::warn!(%error, "score not queued");
        }
    }
}

#[instrument(skip_all, fields(pandaprobe.kind = "agent", input = question, output = Empty), err)]
async fn run_agent(question: &str) -> Result<String, AgentError> {
    let documents = retrieve(question).await;
    let answer = call_llm(question, &documents).await?;
    Span::current().record("output", answer.as_str());
    Ok(answer)
}

#[instrument(skip_all, fields(pandaprobe.kind = "retriever", input = question, output = Empty))]
async fn retrieve(question: &str) -> Vec<&'static str> {
    tokio::task::yield_now().await; // a real retriever would await a store here
    let question = question.to_lowercase();
    let documents: Vec<&'static str> = KNOWLEDGE
        .iter()
        .filter(|(keyword, _)| question.contains(keyword))
        .map(|(_, document)| *document)
        .collect();
    Span::current().record("output", documents.len());
    documents
}

#[instrument(
    skip_all,
    fields(
        pandaprobe.kind = "llm",
        model = MODEL,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        cost = Empty,
    ),
    err
)]
async fn call_llm(question: &str, documents: &[&str]) -> Result<String, AgentError> {
    let span = Span::current();
    let words = |text: &str| text.split_whitespace().count() as u64;
    let prompt_tokens = words(question) + documents.iter().map(|d| words(d)).sum::<u64>();
    span.record("gen_ai.usage.input_tokens", prompt_tokens);
    tokio::task::yield_now().await; // a real model call would await the network here
    if question.contains("fail") {
        return Err(AgentError::ModelRefused);
    }
    let answer = match documents.first() {
        Some(document) => format!("From what I know: {document}"),
        None => format!("I know nothing about {question:?} yet."),
    };
    let completion_tokens = words(&answer);
    span.record("gen_ai.usage.output_tokens", completion_tokens);
    span.record(
        "cost",
        (prompt_tokens + completion_tokens) as f64 * PRICE_PER_TOKEN,
    );
    Ok(answer)
}
