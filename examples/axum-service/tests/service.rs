//! The example service end to end: requests in, sequential and concurrent, on a multi-thread
//! runtime; a graceful shutdown; then exactly what a lenient PandaProbe server received.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use pandaprobe::{Client, TracingLayer, Uuid};
use pandaprobe_axum_example::{serve, Answer, MODEL, USER_HEADER};
use pandaprobe_testing::TestServer;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::dispatcher::{self, DefaultGuard, Dispatch};
use tracing_subscriber::prelude::*;

const WAIT: Duration = Duration::from_secs(10);
const SEQUENTIAL: usize = 5;
const CONCURRENT: usize = 15;
const REQUESTS: usize = SEQUENTIAL + CONCURRENT;
/// The requests whose question makes the fake model fail: one sequential, two concurrent.
const FAILING: [usize; 3] = [2, 7, 16];

thread_local! {
    static DEFAULT: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// A multi-thread runtime whose every thread records into `dispatch`, so that the layer sees
/// each request's spans wherever its task runs, and no global subscriber is needed.
fn runtime(dispatch: &Dispatch) -> tokio::runtime::Runtime {
    let dispatch = dispatch.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            DEFAULT.with(|guard| *guard.borrow_mut() = Some(dispatcher::set_default(&dispatch)));
        })
        .on_thread_stop(|| DEFAULT.with(|guard| drop(guard.borrow_mut().take())))
        .build()
        .expect("a runtime")
}

fn question(i: usize) -> String {
    if FAILING.contains(&i) {
        return format!("please fail #{i}");
    }
    [
        "what is rust",
        "tell me about tracing",
        "is axum fast",
        "who are you",
    ][i % 4]
        .to_owned()
}

/// One request; its index, status and answer.
async fn ask(http: reqwest::Client, url: String, i: usize) -> (usize, u16, Answer) {
    let response = http
        .get(&url)
        .query(&[("q", question(i))])
        .header(USER_HEADER, format!("user-{i}"))
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (i, status, response.json().await.expect("an Answer body"))
}

/// Serves, sends every request, shuts the service down gracefully, then the client.
async fn exercise(client: Client) -> Vec<(usize, u16, Answer)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}/ask", listener.local_addr().expect("an address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let service = tokio::spawn(serve(listener, client.clone(), async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for i in 0..SEQUENTIAL {
        answers.push(ask(http.clone(), url.clone(), i).await);
    }
    let concurrent =
        (SEQUENTIAL..REQUESTS).map(|i| tokio::spawn(ask(http.clone(), url.clone(), i)));
    for answer in futures_util::future::join_all(concurrent).await {
        answers.push(answer.expect("a request task"));
    }

    let _ = stop.send(());
    // Returns once every connection has closed: every request span has closed, so every trace
    // is queued.
    service
        .await
        .expect("the service task")
        .expect("the service");
    client
        .shutdown_async(WAIT)
        .await
        .expect("everything delivered");
    answers
}

#[test]
fn every_request_is_one_trace_with_its_spans_and_scores() {
    let server = TestServer::builder()
        .lenient()
        .start()
        .expect("a test server");
    let client = Client::builder()
        .api_key(server.api_key())
        .project_name("axum-example-tests")
        .endpoint(server.url())
        .build()
        .expect("a client");
    let dispatch =
        Dispatch::new(tracing_subscriber::registry().with(TracingLayer::new(client.clone())));
    let runtime = runtime(&dispatch);
    let answers =
        dispatcher::with_default(&dispatch, || runtime.block_on(exercise(client.clone())));
    drop(runtime);

    // Exactly one trace per request, each named in its answer.
    let received = server.traces();
    assert_eq!(received.len(), REQUESTS, "one trace per request");
    let traces: HashMap<Uuid, Value> = received
        .into_iter()
        .map(|record| {
            (
                record.body["trace_id"]
                    .as_str()
                    .and_then(|id| id.parse().ok())
                    .expect("a trace id"),
                record.body,
            )
        })
        .collect();
    assert_eq!(traces.len(), REQUESTS, "distinct trace ids");
    assert_eq!(answers.len(), REQUESTS);

    let mut scores: HashMap<Uuid, Vec<Value>> = HashMap::new();
    for score in server.scores() {
        let trace_id = score.body["trace_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("a trace id");
        scores.entry(trace_id).or_default().push(score.body);
    }

    for (i, status, answer) in &answers {
        let failing = FAILING.contains(i);
        assert_eq!(
            *status,
            if failing { 500 } else { 200 },
            "request {i}: {answer:?}"
        );
        let trace_id = answer.trace_id.expect("every answer names its trace");
        let trace = &traces[&trace_id];
        assert_eq!(trace["name"], "GET /ask");
        assert_eq!(trace["user_id"], format!("user-{i}"));
        assert_eq!(trace["tags"], json!(["axum-example"]));
        assert_eq!(trace["metadata"]["method"], "GET");
        assert_eq!(
            trace["status"],
            if failing { "ERROR" } else { "COMPLETED" },
            "request {i}"
        );

        // Three spans: the agent, with the retriever and the LLM call under it.
        let spans = trace["spans"].as_array().expect("spans");
        assert_eq!(spans.len(), 3, "request {i}: {trace:#}");
        let named = |name: &str| {
            spans
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no {name} in {trace:#}"))
        };
        let (agent, retrieve, llm) = (named("run_agent"), named("retrieve"), named("call_llm"));
        assert!(
            agent.get("parent_span_id").is_none(),
            "the agent is at the top"
        );
        assert_eq!(retrieve["parent_span_id"], agent["span_id"]);
        assert_eq!(llm["parent_span_id"], agent["span_id"]);
        assert_eq!(
            (&agent["kind"], &retrieve["kind"], &llm["kind"]),
            (&json!("AGENT"), &json!("RETRIEVER"), &json!("LLM"))
        );
        assert_eq!(agent["input"], question(*i));
        assert_eq!(llm["model"], MODEL);
        assert!(
            llm["token_usage"]["prompt_tokens"].as_u64() > Some(0),
            "{llm}"
        );
        if failing {
            for span in [agent, llm] {
                assert_eq!(span["status"], "ERROR", "request {i}: {span}");
                assert_eq!(span["error"], "the model refused to answer");
            }
            assert_eq!(retrieve["status"], "UNSET");
        } else {
            assert_eq!(
                (&agent["status"], &llm["status"]),
                (&json!("UNSET"), &json!("UNSET"))
            );
            assert_eq!(
                Some(agent["output"].as_str()),
                Some(answer.answer.as_deref())
            );
            assert!(
                llm["token_usage"]["completion_tokens"].as_u64() > Some(0),
                "{llm}"
            );
            assert!(llm["cost"]["total"].as_f64() > Some(0.0), "{llm}");
        }

        // Its scores, attached to its trace: "answered", and "brevity" for an answer.
        let mut names: Vec<&str> = scores.get(&trace_id).map_or(Vec::new(), |s| {
            s.iter().filter_map(|s| s["name"].as_str()).collect()
        });
        names.sort_unstable();
        let expected: &[&str] = if failing {
            &["answered"]
        } else {
            &["answered", "brevity"]
        };
        assert_eq!(names, expected, "request {i}");
        let answered = scores[&trace_id]
            .iter()
            .find(|s| s["name"] == "answered")
            .expect("answered");
        assert_eq!(answered["value"], if failing { "false" } else { "true" });
    }
    let expected_scores = 2 * REQUESTS - FAILING.len();
    assert_eq!(
        scores.values().map(Vec::len).sum::<usize>(),
        expected_scores,
        "no stray scores"
    );

    let stats = client.stats();
    assert_eq!(
        (stats.traces.sent, stats.traces.dropped.total()),
        (REQUESTS as u64, 0),
        "{stats}"
    );
    assert_eq!(
        (stats.scores.sent, stats.scores.dropped.total()),
        (expected_scores as u64, 0),
        "{stats}"
    );
}
