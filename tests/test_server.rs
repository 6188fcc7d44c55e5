//! Tests of `pandaprobe::testing::TestServer` against a real HTTP client (reqwest) and raw
//! TCP. Every wait has a deadline; nothing sleeps to synchronise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pandaprobe::testing::{Fault, TestServer, DEFAULT_API_KEY, SCORES_PATH, TRACES_PATH};
use serde_json::{json, Value};

const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
const PROJECT: &str = "my-project";
const WAIT: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// What the client saw.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request with the usual headers, minus `omit`, plus `extra`.
struct Call<'a> {
    path: &'a str,
    body: String,
    omit: Vec<&'a str>,
    extra: Vec<(&'a str, &'a str)>,
}

impl<'a> Call<'a> {
    fn new(path: &'a str, body: impl Into<String>) -> Self {
        Call {
            path,
            body: body.into(),
            omit: Vec::new(),
            extra: Vec::new(),
        }
    }

    fn omit(mut self, name: &'a str) -> Self {
        self.omit.push(name);
        self
    }

    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.omit.push(name);
        self.extra.push((name, value));
        self
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        server: &TestServer,
    ) -> Result<Reply, reqwest::Error> {
        self.send_to(client, &server.url(), server.api_key()).await
    }

    async fn send_to(
        &self,
        client: &reqwest::Client,
        url: &str,
        api_key: &str,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = client.post(format!("{url}{}", self.path));
        let defaults = [
            ("X-API-Key", api_key),
            ("X-Project-Name", PROJECT),
            ("Content-Type", "application/json"),
        ];
        for (name, value) in defaults {
            if !self.omit.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                request = request.header(name, value);
            }
        }
        for (name, value) in &self.extra {
            request = request.header(*name, *value);
        }
        let response = request.body(self.body.clone()).send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

fn score_body() -> Value {
    json!({
        "trace_id": TRACE_ID,
        "name": "accuracy",
        "value": "0.85",
        "data_type": "NUMERIC",
        "source": "PROGRAMMATIC",
        "reason": "close enough",
        "metadata": {"judge": "unit"}
    })
}

fn score_with(key: &str, value: Value) -> String {
    let mut body = score_body();
    body[key] = value;
    body.to_string()
}

fn score_without(key: &str) -> String {
    let mut body = score_body();
    body.as_object_mut().expect("object").remove(key);
    body.to_string()
}

fn trace_body() -> Value {
    json!({
        "trace_id": TRACE_ID,
        "name": "agent-run",
        "status": "COMPLETED",
        "started_at": "2026-11-29T03:27:52.093623+00:00",
        "ended_at": "2026-11-29T03:27:53.000000+00:00",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "tags": ["a", "b"],
        "spans": [{
            "span_id": "6a0f5c1e-7c43-4a55-9d0f-1b0e2b8f8d11",
            "name": "llm-call",
            "kind": "LLM",
            "status": "OK",
            "started_at": "2026-11-29T03:27:52.100000+00:00",
            "token_usage": {"prompt_tokens": 3, "completion_tokens": 5},
            "cost": {"total": 0.0001}
        }]
    })
}

fn trace_with(key: &str, value: Value) -> String {
    let mut body = trace_body();
    body[key] = value;
    body.to_string()
}

fn trace_without(key: &str) -> String {
    let mut body = trace_body();
    body.as_object_mut().expect("object").remove(key);
    body.to_string()
}

fn span_with(key: &str, value: Value) -> String {
    let mut body = trace_body();
    body["spans"][0][key] = value;
    body.to_string()
}

/// Sends `calls` one after another and returns the statuses (panics on transport errors).
fn statuses(server: &TestServer, calls: &[Call<'_>]) -> Vec<u16> {
    let client = client();
    runtime().block_on(async {
        let mut out = Vec::new();
        for call in calls {
            let reply = call.send(&client, server).await.expect("request");
            out.push(reply.status);
        }
        out
    })
}

fn one(server: &TestServer, call: Call<'_>) -> Reply {
    let client = client();
    runtime()
        .block_on(call.send(&client, server))
        .expect("request")
}

fn one_result(server: &TestServer, call: Call<'_>) -> Result<Reply, reqwest::Error> {
    let client = client();
    runtime().block_on(call.send(&client, server))
}

fn raw_request(path: &str, body: &str, api_key: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {api_key}\r\n\
         X-Project-Name: {PROJECT}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one response (headers plus a `Content-Length` body) from a raw socket.
fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// True when the peer closed the socket (EOF or reset) within the deadline.
fn peer_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

// ------------------------------------------------------------------------------------------
// Normal handling
// ------------------------------------------------------------------------------------------

#[test]
fn good_score_is_answered_201_and_stored() {
    let server = TestServer::start().expect("start");
    let reply = one(
        &server,
        Call::new(SCORES_PATH, score_body().to_string()).header("X-Request-ID", "req-1"),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("x-request-id"), Some("req-1"));
    let answer = reply.json();
    assert_eq!(answer["trace_id"], TRACE_ID);
    assert_eq!(answer["name"], "accuracy");
    assert_eq!(answer["value"], "0.85");
    assert_eq!(answer["data_type"], "NUMERIC");
    assert_eq!(answer["source"], "PROGRAMMATIC");
    assert_eq!(answer["reason"], "close enough");
    assert_eq!(answer["metadata"], json!({"judge": "unit"}));
    assert!(answer["created_at"].as_str().is_some_and(|s| s.len() >= 20));

    let scores = server.scores();
    assert_eq!(scores.len(), 1);
    assert_eq!(server.score_count(), 1);
    assert_eq!(scores[0].body, score_body());
    assert_eq!(scores[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(answer["id"], scores[0].id.to_string());
    assert_eq!(server.status_count(201), 1);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, SCORES_PATH);
    assert_eq!(requests[0].status, Some(201));
    assert_eq!(requests[0].request_id(), Some("req-1"));
    assert_eq!(requests[0].header("X-API-KEY"), Some(DEFAULT_API_KEY));
    assert_eq!(requests[0].json(), Some(score_body()));
    assert!(requests[0].fault.is_none());
}

#[test]
fn score_defaults_and_accepted_values() {
    let server = TestServer::start().expect("start");
    // Minimal body: server defaults NUMERIC / ANNOTATION.
    let minimal = json!({"trace_id": TRACE_ID, "name": "n", "value": "1"}).to_string();
    let reply = one(&server, Call::new(SCORES_PATH, minimal));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["data_type"], "NUMERIC");
    assert_eq!(reply.json()["source"], "ANNOTATION");

    let ok = [
        score_with("value", json!("0")),
        score_with("value", json!("1.0")),
        score_with("value", json!("1e-3")),
        json!({"trace_id": TRACE_ID, "name": "b", "value": "TRUE", "data_type": "BOOLEAN"})
            .to_string(),
        json!({"trace_id": TRACE_ID, "name": "b", "value": "False", "data_type": "BOOLEAN"})
            .to_string(),
        json!({"trace_id": TRACE_ID, "name": "c", "value": "PASS", "data_type": "CATEGORICAL"})
            .to_string(),
        score_with("source", json!("ANNOTATION")),
        score_with("reason", Value::Null),
        score_with("name", json!("x".repeat(255))),
        // Unknown keys are ignored.
        score_with("session_id", json!("s-1")),
    ];
    let calls: Vec<Call<'_>> = ok
        .iter()
        .map(|b| Call::new(SCORES_PATH, b.clone()))
        .collect();
    assert_eq!(statuses(&server, &calls), vec![201; ok.len()]);
    assert_eq!(server.score_count(), ok.len() + 1);
}

#[test]
fn score_validation_errors_are_422() {
    let server = TestServer::start().expect("start");
    let bad = [
        ("trace_id", score_with("trace_id", json!("not-a-uuid"))),
        ("trace_id", score_with("trace_id", json!(42))),
        ("trace_id", score_without("trace_id")),
        ("name", score_without("name")),
        ("name", score_with("name", json!(""))),
        ("name", score_with("name", json!(7))),
        ("value", score_without("value")),
        ("value", score_with("value", json!(0.5))),
        ("data_type", score_with("data_type", json!("numeric"))),
        ("data_type", score_with("data_type", Value::Null)),
        ("value", score_with("value", json!("1.5"))),
        ("value", score_with("value", json!("-0.1"))),
        ("value", score_with("value", json!("nan"))),
        ("value", score_with("value", json!("inf"))),
        ("value", score_with("value", json!("abc"))),
        (
            "value",
            json!({"trace_id": TRACE_ID, "name": "b", "value": "yes", "data_type": "BOOLEAN"})
                .to_string(),
        ),
        ("source", score_with("source", json!("SDK"))),
        ("reason", score_with("reason", json!(1))),
        ("metadata", score_with("metadata", Value::Null)),
        ("metadata", score_with("metadata", json!([1, 2]))),
        ("metadata", score_with("metadata", json!("text"))),
    ];
    let client = client();
    runtime().block_on(async {
        for (field, body) in &bad {
            let reply = Call::new(SCORES_PATH, body.clone())
                .send(&client, &server)
                .await
                .expect("request");
            assert_eq!(reply.status, 422, "{field}: {body} -> {}", reply.body);
            let answer = reply.json();
            assert_eq!(answer["detail"], "Validation error");
            let errors = answer["errors"].as_array().expect("errors");
            assert!(
                errors.iter().any(|e| e["field"] == *field),
                "{field} not in {answer}"
            );
            assert!(errors.iter().all(|e| e["message"].is_string()));
        }
    });
    assert_eq!(server.score_count(), 0);
    assert_eq!(server.status_count(422), bad.len());
}

#[test]
fn score_database_errors_are_500() {
    let server = TestServer::start().expect("start");
    let long = "x".repeat(256);
    let cases = [
        score_with("name", json!(long)),
        json!({"trace_id": TRACE_ID, "name": "c", "value": long, "data_type": "CATEGORICAL"})
            .to_string(),
    ];
    for body in cases {
        let reply = one(&server, Call::new(SCORES_PATH, body));
        assert_eq!(reply.status, 500);
        assert_eq!(reply.body, "Internal Server Error");
        assert!(reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")));
        assert_eq!(reply.header("connection"), Some("close"));
    }
    assert_eq!(server.score_count(), 0);
    assert_eq!(server.status_count(500), 2);
}

#[test]
fn auth_is_checked_with_401() {
    let server = TestServer::builder()
        .api_key("sk_pp_custom")
        .start()
        .expect("start");
    assert_eq!(server.api_key(), "sk_pp_custom");
    let body = score_body().to_string();
    let missing = one(
        &server,
        Call::new(SCORES_PATH, body.clone()).omit("X-API-Key"),
    );
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json(), json!({"detail": "Invalid API key"}));
    let wrong = one(
        &server,
        Call::new(TRACES_PATH, trace_body().to_string()).header("X-API-Key", DEFAULT_API_KEY),
    );
    assert_eq!(wrong.status, 401);
    let right = one(&server, Call::new(SCORES_PATH, body));
    assert_eq!(right.status, 201);
    assert_eq!(server.status_count(401), 2);
    assert_eq!(server.score_count(), 1);
}

#[test]
fn compressed_bodies_are_400_before_auth() {
    let server = TestServer::start().expect("start");
    let reply = one(
        &server,
        Call::new(SCORES_PATH, score_body().to_string())
            .header("Content-Encoding", "gzip")
            .header("X-API-Key", "wrong"),
    );
    assert_eq!(reply.status, 400);
    assert_eq!(server.score_count(), 0);
}

#[test]
fn project_name_rules_are_422() {
    let server = TestServer::start().expect("start");
    let body = score_body().to_string();
    let long = "p".repeat(256);
    let mut calls = vec![Call::new(SCORES_PATH, body.clone()).omit("X-Project-Name")];
    for bad in ["-project", "project-", "a/b", "semi;colon", long.as_str()] {
        calls.push(Call::new(SCORES_PATH, body.clone()).header("X-Project-Name", bad));
    }
    let bad_count = calls.len();
    for good in ["p", "My Project v1.2", "o'neil_x"] {
        calls.push(Call::new(SCORES_PATH, body.clone()).header("X-Project-Name", good));
    }
    let mut expected = vec![422; bad_count];
    expected.extend([201; 3]);
    assert_eq!(statuses(&server, &calls), expected);
    // The missing header is named in the error.
    let reply = one(&server, Call::new(TRACES_PATH, body).omit("X-Project-Name"));
    assert_eq!(reply.json()["errors"][0]["field"], "x-project-name");
}

#[test]
fn bodies_that_are_not_json_objects_are_422() {
    let server = TestServer::start().expect("start");
    let array = format!("[{}]", score_body());
    let calls = [
        Call::new(SCORES_PATH, array.clone()),
        Call::new(TRACES_PATH, format!("[{}]", trace_body())),
        Call::new(SCORES_PATH, "not json"),
        Call::new(SCORES_PATH, ""),
        Call::new(SCORES_PATH, "\"a string\""),
        Call::new(SCORES_PATH, score_body().to_string()).header("Content-Type", "text/plain"),
    ];
    assert_eq!(statuses(&server, &calls), vec![422; 6]);
    let reply = one(&server, Call::new(SCORES_PATH, array));
    assert_eq!(reply.json()["detail"], "Validation error");
    // Without a Content-Type the body is still parsed as JSON, like FastAPI.
    let untyped = one(
        &server,
        Call::new(SCORES_PATH, score_body().to_string()).omit("Content-Type"),
    );
    assert_eq!(untyped.status, 201);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = TestServer::start().expect("start");
    let client = client();
    runtime().block_on(async {
        let reply = Call::new("/scores", score_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json(), json!({"detail": "Not Found"}));
        let get = client
            .get(format!("{}{SCORES_PATH}", server.url()))
            .send()
            .await
            .expect("request");
        assert_eq!(get.status().as_u16(), 405);
    });
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].status, Some(405));
}

#[test]
fn traces_are_accepted_with_202_and_upserted() {
    let server = TestServer::start().expect("start");
    let first = one(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert_eq!(first.status, 202, "{}", first.body);
    let answer = first.json();
    assert_eq!(answer["trace_id"], TRACE_ID);
    assert!(answer["task_id"]
        .as_str()
        .is_some_and(|t| uuid::Uuid::parse_str(t).is_ok()));

    // Same trace_id again: one record, replaced body, but both requests count.
    let second = one(
        &server,
        Call::new(TRACES_PATH, trace_with("name", json!("renamed"))).header("X-Request-ID", "r2"),
    );
    assert_eq!(second.status, 202);
    let traces = server.traces();
    assert_eq!(traces.len(), 1);
    assert_eq!(server.trace_count(), 1);
    assert_eq!(traces[0].id.to_string(), TRACE_ID);
    assert_eq!(traces[0].body["name"], "renamed");
    assert_eq!(traces[0].request_id.as_deref(), Some("r2"));
    assert_eq!(server.status_count(202), 2);
    assert_eq!(server.request_count(), 2);

    // No trace_id: the server makes one.
    let generated = one(&server, Call::new(TRACES_PATH, trace_without("trace_id")));
    assert_eq!(generated.status, 202);
    let id = generated.json()["trace_id"]
        .as_str()
        .expect("trace_id")
        .to_owned();
    assert_ne!(id, TRACE_ID);
    assert!(server.wait_for_traces(2, WAIT));
    assert_eq!(server.traces()[1].id.to_string(), id);

    // Minimal trace.
    let minimal = json!({"name": "t", "started_at": "2026-11-29T03:27:52Z"}).to_string();
    assert_eq!(one(&server, Call::new(TRACES_PATH, minimal)).status, 202);
}

#[test]
fn trace_validation_errors_are_422() {
    let server = TestServer::start().expect("start");
    let too_many_spans: Vec<Value> = (0..501)
        .map(|i| json!({"name": format!("s{i}"), "started_at": "2026-11-29T03:27:52Z"}))
        .collect();
    let bad = [
        ("name", trace_without("name")),
        ("name", trace_with("name", json!(""))),
        ("name", trace_with("name", json!("n".repeat(513)))),
        ("started_at", trace_without("started_at")),
        ("started_at", trace_with("started_at", json!("yesterday"))),
        (
            "ended_at",
            trace_with("ended_at", json!("2026-13-01T00:00:00Z")),
        ),
        ("status", trace_with("status", json!("DONE"))),
        ("metadata", trace_with("metadata", Value::Null)),
        ("metadata", trace_with("metadata", json!([]))),
        ("trace_id", trace_with("trace_id", json!("xyz"))),
        (
            "session_id",
            trace_with("session_id", json!("s".repeat(256))),
        ),
        ("user_id", trace_with("user_id", json!(5))),
        ("tags", trace_with("tags", json!("a,b"))),
        ("tags[1]", trace_with("tags", json!(["a", 1]))),
        ("spans", trace_with("spans", json!(too_many_spans))),
        ("spans", trace_with("spans", json!({}))),
        ("spans[0].name", span_with("name", json!(""))),
        ("spans[0].kind", span_with("kind", json!("LLM_CALL"))),
        ("spans[0].status", span_with("status", json!("FAILED"))),
        ("spans[0].span_id", span_with("span_id", json!("nope"))),
        (
            "spans[0].parent_span_id",
            span_with("parent_span_id", json!("nope")),
        ),
        ("spans[0].started_at", span_with("started_at", Value::Null)),
        ("spans[0].metadata", span_with("metadata", Value::Null)),
    ];
    let client = client();
    runtime().block_on(async {
        for (field, body) in &bad {
            let reply = Call::new(TRACES_PATH, body.clone())
                .send(&client, &server)
                .await
                .expect("request");
            assert_eq!(reply.status, 422, "{field} -> {}", reply.body);
            let answer = reply.json();
            assert!(
                answer["errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["field"] == *field)),
                "{field} not in {answer}"
            );
        }
        // Exactly 500 spans and a null parent_span_id are fine.
        let spans: Vec<Value> = (0..500)
            .map(|i| json!({"name": format!("s{i}"), "started_at": "2026-11-29T03:27:52Z", "parent_span_id": null}))
            .collect();
        let reply = Call::new(TRACES_PATH, trace_with("spans", json!(spans)))
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 202, "{}", reply.body);
    });
    assert_eq!(server.trace_count(), 1);
}

#[test]
fn scores_need_stored_traces_when_required() {
    let delay = Duration::from_millis(400);
    let server = TestServer::builder()
        .require_known_traces(true)
        .trace_store_delay(delay)
        .start()
        .expect("start");
    let client = client();
    runtime().block_on(async {
        // A trace that was never sent: the foreign key fails.
        let unknown = Call::new(
            SCORES_PATH,
            score_with("trace_id", json!("00000000-0000-4000-8000-000000000000")),
        )
        .send(&client, &server)
        .await
        .expect("request");
        assert_eq!(unknown.status, 500);
        assert_eq!(unknown.body, "Internal Server Error");

        let sent_at = Instant::now();
        let trace = Call::new(TRACES_PATH, trace_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(trace.status, 202);
        // Right after the 202 the worker has not stored it yet. (The trace is stored no
        // earlier than `sent_at + delay`, so an answer before then must be the 500.)
        let early = Call::new(SCORES_PATH, score_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        if sent_at.elapsed() < delay {
            assert_eq!(early.status, 500);
        }

        // Retry (as a client must) until it is stored, with a deadline.
        let deadline = Instant::now() + WAIT;
        loop {
            let reply = Call::new(SCORES_PATH, score_body().to_string())
                .send(&client, &server)
                .await
                .expect("request");
            if reply.status == 201 {
                break;
            }
            assert_eq!(reply.status, 500);
            assert!(Instant::now() < deadline, "trace never became stored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(sent_at.elapsed() >= delay);
    });
    assert_eq!(server.score_count(), 1);
}

#[test]
fn request_id_is_echoed_on_every_answer() {
    let server = TestServer::start().expect("start");
    server.fail_next(1, Fault::Status(503));
    let client = client();
    runtime().block_on(async {
        for (call, status) in [
            (Call::new(SCORES_PATH, score_body().to_string()), 503),
            (Call::new(SCORES_PATH, "[]"), 422),
            (Call::new("/nope", "{}"), 404),
            (Call::new(TRACES_PATH, trace_body().to_string()), 202),
        ] {
            let reply = call
                .header("X-Request-ID", "abc-123")
                .send(&client, &server)
                .await
                .expect("request");
            assert_eq!(reply.status, status);
            assert_eq!(reply.header("x-request-id"), Some("abc-123"));
        }
        let without = Call::new(TRACES_PATH, trace_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(without.header("x-request-id"), None);
    });
}

// ------------------------------------------------------------------------------------------
// Faults
// ------------------------------------------------------------------------------------------

#[test]
fn status_faults_send_the_real_bodies_and_store_nothing() {
    let server = TestServer::start().expect("start");
    let client = client();
    runtime().block_on(async {
        for status in [401u16, 403, 404, 409, 422, 429, 502, 503, 504, 408, 418] {
            server.fail_next(1, Fault::Status(status));
            let reply = Call::new(SCORES_PATH, score_body().to_string())
                .send(&client, &server)
                .await
                .expect("request");
            assert_eq!(reply.status, status);
            assert!(reply.header("retry-after").is_none());
            match status {
                401 => assert_eq!(reply.json(), json!({"detail": "Invalid API key"})),
                403 | 404 | 409 | 418 => assert!(reply.json()["detail"].is_string()),
                422 => {
                    assert_eq!(reply.json()["detail"], "Validation error");
                    assert!(reply.json()["errors"][0]["field"].is_string());
                }
                429 => assert_eq!(
                    reply.json(),
                    json!({"error": "Rate limit exceeded: 200 per 1 minute"})
                ),
                _ => assert!(!reply.body.is_empty()),
            }
        }
        server.fail_next(1, Fault::Status(500));
        let reply = Call::new(SCORES_PATH, score_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 500);
        assert_eq!(reply.body, "Internal Server Error");
        assert_eq!(reply.header("connection"), Some("close"));
    });
    assert_eq!(server.score_count(), 0);
    let requests = server.requests();
    assert_eq!(requests[0].fault, Some(Fault::Status(401)));
    assert_eq!(requests[0].status, Some(401));
    assert_eq!(server.status_count(429), 1);
}

#[test]
fn retry_after_fault_sets_the_header() {
    let server = TestServer::start().expect("start");
    server.fail_next(
        1,
        Fault::RetryAfter {
            status: 429,
            retry_after: "2".into(),
        },
    );
    server.fail_next(
        1,
        Fault::RetryAfter {
            status: 503,
            retry_after: "Wed, 21 Oct 2015 07:28:00 GMT".into(),
        },
    );
    let first = one(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert_eq!(first.status, 429);
    assert_eq!(first.header("retry-after"), Some("2"));
    assert_eq!(
        first.json(),
        json!({"error": "Rate limit exceeded: 100 per 1 minute"})
    );
    let second = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(second.status, 503);
    assert_eq!(
        second.header("retry-after"),
        Some("Wed, 21 Oct 2015 07:28:00 GMT")
    );
    assert_eq!(server.trace_count() + server.score_count(), 0);
}

#[test]
fn fail_next_counts_down_and_queues_in_order() {
    let server = TestServer::start().expect("start");
    server.fail_next(2, Fault::Status(503));
    server.fail_next(1, Fault::Status(429));
    let calls: Vec<Call<'_>> = (0..4)
        .map(|_| Call::new(SCORES_PATH, score_body().to_string()))
        .collect();
    assert_eq!(statuses(&server, &calls), vec![503, 503, 429, 201]);
    assert_eq!(server.score_count(), 1);
}

#[test]
fn fail_next_on_only_hits_its_path() {
    let server = TestServer::start().expect("start");
    server.fail_next_on(TRACES_PATH, 1, Fault::Status(502));
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![201, 502, 202]);
}

#[test]
fn delay_fault_answers_late_and_stores() {
    let server = TestServer::start().expect("start");
    let delay = Duration::from_millis(200);
    server.fail_next(1, Fault::Delay(delay));
    let started = Instant::now();
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 201);
    assert!(started.elapsed() >= delay);
    assert_eq!(server.score_count(), 1);
    assert_eq!(server.requests()[0].fault, Some(Fault::Delay(delay)));
}

#[test]
fn delay_fault_stores_even_when_the_client_gave_up() {
    let server = TestServer::start().expect("start");
    server.fail_next(1, Fault::Delay(Duration::from_millis(600)));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let result = runtime()
        .block_on(Call::new(SCORES_PATH, score_body().to_string()).send(&impatient, &server));
    let error = result.expect_err("the client should time out");
    assert!(error.is_timeout(), "{error}");
    // The ambiguous failure: the server stores it anyway.
    assert!(server.wait_for_scores(1, WAIT));
    assert!(server.wait_for_status(201, 1, WAIT));
    assert_eq!(server.requests()[0].status, Some(201));
}

#[test]
fn reset_fault_closes_without_answer_and_stores_nothing() {
    let server = TestServer::start().expect("start");
    server.fail_next(1, Fault::Reset);
    let result = one_result(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert!(result.is_err(), "{result:?}");
    assert_eq!(server.score_count(), 0);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, None);
    assert_eq!(requests[0].fault, Some(Fault::Reset));
    // The server is fine afterwards.
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 201);
}

#[test]
fn store_then_reset_stores_but_never_answers() {
    let server = TestServer::start().expect("start");
    server.fail_next(2, Fault::StoreThenReset);
    let first = one_result(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert!(first.is_err(), "{first:?}");
    assert_eq!(server.score_count(), 1);
    let second = one_result(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert!(second.is_err(), "{second:?}");
    assert_eq!(server.trace_count(), 1);
    // An invalid request is only reset.
    server.fail_next(1, Fault::StoreThenReset);
    let invalid = one_result(&server, Call::new(SCORES_PATH, "[]"));
    assert!(invalid.is_err());
    assert_eq!(server.score_count(), 1);
    assert!(server.requests().iter().all(|r| r.status.is_none()));
}

#[test]
fn hang_fault_never_answers_until_the_client_gives_up() {
    let server = TestServer::start().expect("start");
    server.fail_next(1, Fault::Hang);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let result = runtime()
        .block_on(Call::new(SCORES_PATH, score_body().to_string()).send(&impatient, &server));
    assert!(result.expect_err("timeout").is_timeout());
    assert_eq!(server.score_count(), 0);
    assert_eq!(server.requests()[0].fault, Some(Fault::Hang));
    assert_eq!(server.requests()[0].status, None);
}

#[test]
fn hang_fault_ends_when_the_server_stops() {
    let server = TestServer::start().expect("start");
    server.fail_next(1, Fault::Hang);
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .write_all(raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY).as_bytes())
        .expect("write");
    assert!(server.wait_for_requests(1, WAIT));
    let started = Instant::now();
    server.stop();
    assert!(peer_closed(&mut stream));
    assert!(started.elapsed() < WAIT);
}

#[test]
fn raw_fault_sends_exactly_what_it_is_given() {
    let server = TestServer::start().expect("start");
    let huge = Bytes::from(vec![b'x'; 1 << 20]);
    server.fail_next(
        1,
        Fault::Raw {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/html".into()),
                ("x-odd".into(), "yes".into()),
                ("bad header".into(), "dropped".into()),
            ],
            body: huge.clone(),
        },
    );
    server.fail_next(
        1,
        Fault::Raw {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(b"{not json"),
        },
    );
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/html"));
    assert_eq!(reply.header("x-odd"), Some("yes"));
    assert_eq!(reply.body.len(), huge.len());
    let garbage = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(garbage.status, 201);
    assert_eq!(garbage.body, "{not json");
    assert_eq!(server.score_count(), 0);
}

#[test]
fn responder_decides_per_request_and_clear_faults_removes_it() {
    let server = TestServer::start().expect("start");
    server.set_responder(|info| {
        let body = info.json()?;
        if body["name"] == "flaky" && info.index % 2 == 0 {
            Some(Fault::Status(503))
        } else if info.header("x-chaos") == Some("reset") {
            Some(Fault::Reset)
        } else {
            None
        }
    });
    let flaky = score_with("name", json!("flaky"));
    let calls = [
        Call::new(SCORES_PATH, flaky.clone()),
        Call::new(SCORES_PATH, flaky.clone()),
        Call::new(SCORES_PATH, flaky.clone()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![503, 201, 503, 201]);
    let reset = one_result(
        &server,
        Call::new(SCORES_PATH, score_body().to_string()).header("X-Chaos", "reset"),
    );
    assert!(reset.is_err());
    // The fail_next queue comes before the responder.
    server.fail_next(1, Fault::Status(409));
    assert_eq!(
        statuses(&server, &[Call::new(SCORES_PATH, flaky.clone())]),
        vec![409]
    );
    server.fail_next(5, Fault::Status(409));
    server.clear_faults();
    let calls: Vec<Call<'_>> = (0..3)
        .map(|_| Call::new(SCORES_PATH, flaky.clone()))
        .collect();
    assert_eq!(statuses(&server, &calls), vec![201; 3]);
}

// ------------------------------------------------------------------------------------------
// Connections, lifecycle
// ------------------------------------------------------------------------------------------

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = TestServer::start().expect("start");
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    for _ in 0..3 {
        let request = raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY);
        stream.write_all(request.as_bytes()).expect("write");
        let response = read_response(&mut stream);
        assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    }
    assert_eq!(server.score_count(), 3);
}

#[test]
fn a_500_closes_the_connection() {
    let server = TestServer::builder()
        .require_known_traces(true)
        .start()
        .expect("start");
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    // Unknown trace: 500 from normal handling.
    let request = raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY);
    stream.write_all(request.as_bytes()).expect("write");
    let response = read_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(response.to_ascii_lowercase().contains("connection: close"));
    assert!(peer_closed(&mut stream));

    // Same for an injected 500.
    server.fail_next(1, Fault::Status(500));
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    let request = raw_request(TRACES_PATH, &trace_body().to_string(), DEFAULT_API_KEY);
    stream.write_all(request.as_bytes()).expect("write");
    let response = read_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(peer_closed(&mut stream));
}

#[test]
fn stop_refuses_and_closes_then_restart_listens_on_the_same_port() {
    let server = TestServer::start().expect("start");
    let url = server.url();
    let client = client();
    let rt = runtime();
    let call = Call::new(SCORES_PATH, score_body().to_string());
    assert_eq!(
        rt.block_on(call.send(&client, &server)).expect("up").status,
        201
    );

    // An idle kept-alive connection is closed by stop().
    let mut idle = TcpStream::connect(server.addr()).expect("connect");
    idle.write_all(raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY).as_bytes())
        .expect("write");
    idle.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 201"));

    server.stop();
    assert!(peer_closed(&mut idle));
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "still listening"
    );
    let down = rt.block_on(call.send(&client, &server));
    assert!(down.is_err(), "{down:?}");
    server.stop(); // stopping twice is harmless

    server.restart().expect("restart");
    assert_eq!(server.url(), url);
    assert_eq!(
        rt.block_on(call.send(&client, &server))
            .expect("up again")
            .status,
        201
    );
    assert_eq!(server.score_count(), 3, "records survive a restart");
    // restart() on a running server is a stop + listen: kept-alive connections are closed,
    // so use a fresh client (a pooled connection would fail once, as with a real restart).
    server.restart().expect("restart while running");
    let fresh = self::client();
    assert_eq!(
        rt.block_on(call.send(&fresh, &server)).expect("up").status,
        201
    );
}

#[test]
fn bind_later_reserves_the_port_until_restart() {
    let server = TestServer::builder().bind_later().start().expect("start");
    assert_ne!(server.addr().port(), 0);
    assert!(TcpStream::connect(server.addr()).is_err());
    let call = Call::new(SCORES_PATH, score_body().to_string());
    assert!(one_result(&server, Call::new(SCORES_PATH, score_body().to_string())).is_err());
    server.restart().expect("listen");
    assert_eq!(one(&server, call).status, 201);
}

#[test]
fn fixed_port_and_busy_port() {
    let first = TestServer::start().expect("start");
    let busy = TestServer::builder().port(first.addr().port()).start();
    assert!(busy.is_err(), "the port is taken");
    let port = first.addr().port();
    drop(first);
    let again = TestServer::builder().port(port).start().expect("rebind");
    assert_eq!(again.addr().port(), port);
    assert_eq!(again.url(), format!("http://127.0.0.1:{port}"));
}

#[test]
fn works_inside_a_current_thread_runtime() {
    let rt = runtime();
    rt.block_on(async {
        let server = TestServer::start().expect("start");
        let client = client();
        let reply = Call::new(SCORES_PATH, score_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 201);
        assert!(server.wait_for_scores(1, WAIT));
        server.stop();
        server.restart().expect("restart");
        // Dropping inside the runtime must not panic or hang.
        drop(server);
    });
}

#[test]
fn works_inside_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = TestServer::builder()
            .worker_threads(2)
            .start()
            .expect("start");
        let client = client();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let client = client.clone();
            let url = server.url();
            tasks.push(tokio::spawn(async move {
                Call::new(SCORES_PATH, score_body().to_string())
                    .send_to(&client, &url, DEFAULT_API_KEY)
                    .await
                    .map(|r| r.status)
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("join").expect("request"), 201);
        }
        assert_eq!(server.score_count(), 40);
        server.stop();
        assert!(TcpStream::connect(server.addr()).is_err());
        server.restart().expect("restart");
        // The pooled connections were closed by stop(): use a fresh client.
        let reply = Call::new(SCORES_PATH, score_body().to_string())
            .send(&self::client(), &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 201);
    });
}

#[test]
fn drop_with_a_hung_request_is_bounded() {
    let server = TestServer::start().expect("start");
    server.fail_next(1, Fault::Hang);
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .write_all(raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY).as_bytes())
        .expect("write");
    assert!(server.wait_for_requests(1, WAIT));
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < WAIT);
    assert!(peer_closed(&mut stream));
}

#[test]
fn waits_time_out_and_reset_records_forgets() {
    let server = TestServer::start().expect("start");
    let started = Instant::now();
    assert!(!server.wait_for_scores(1, Duration::from_millis(50)));
    assert!(!server.wait_for_requests(1, Duration::from_millis(50)));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(server.wait_for_scores(0, Duration::ZERO));

    let calls = [
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![202, 201]);
    assert_eq!(server.request_count(), 2);
    server.reset_records();
    assert_eq!(server.request_count(), 0);
    assert_eq!(server.score_count(), 0);
    assert_eq!(server.trace_count(), 0);
    assert_eq!(server.status_count(201), 0);
    assert!(server.requests().is_empty());
    server.set_responder(|info| (info.index == 0).then_some(Fault::Status(503)));
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(
        statuses(&server, &calls),
        vec![503, 201],
        "index restarts at 0"
    );
}

#[test]
fn record_requests_off_still_counts() {
    let server = TestServer::builder()
        .record_requests(false)
        .start()
        .expect("start");
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, "[]"),
    ];
    assert_eq!(statuses(&server, &calls), vec![201, 422]);
    assert!(server.requests().is_empty());
    assert_eq!(server.request_count(), 2);
    assert_eq!(server.status_count(422), 1);
    assert_eq!(server.score_count(), 1);
}

#[test]
fn malformed_http_does_not_hurt_the_server() {
    let server = TestServer::start().expect("start");
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /traces HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /traces HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        b"\x00\x01\x02\xff",
    ] {
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        let _ = stream.write_all(junk);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = peer_closed(&mut stream);
    }
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 201);
}
