//! `GET /traces/{trace_id}` and `POST /traces/{trace_id}/spans`: 404 until the workers store
//! the trace, then the trace as the real server returns it; spans upserted the way its
//! database does, parents as sent, NUL refused with a 500; the write time per span.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pandaprobe_testing::{
    spans_path, trace_path, Fault, TestServer, SPANS_PATH_TEMPLATE, TRACES_PATH,
    TRACE_PATH_TEMPLATE,
};
use serde_json::{json, Value};
use uuid::Uuid;

const SPAN_ID: &str = "6a0f5c1e-7c43-4a55-9d0f-1b0e2b8f8d11";

fn id() -> Uuid {
    Uuid::parse_str(TRACE_ID).expect("uuid")
}

fn not_found() -> Value {
    json!({"detail": format!("Trace {TRACE_ID} not found.")})
}

/// A lenient server with the common trace stored.
fn stored() -> TestServer {
    let server = lenient();
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    assert!(server.wait_for_stored_traces(1, WAIT));
    server
}

fn get(server: &TestServer, trace_id: Uuid) -> Reply {
    one(server, Call::get(&trace_path(trace_id)))
}

fn post_spans(server: &TestServer, spans: Value) -> Reply {
    one(server, Call::new(&spans_path(id()), spans.to_string()))
}

fn span(span_id: &str, name: &str) -> Value {
    json!({"span_id": span_id, "name": name, "started_at": "2026-11-29T03:27:52.5Z"})
}

/// The stored spans by id.
fn spans_of(server: &TestServer) -> Vec<Value> {
    let trace = server.stored_trace(id()).expect("stored");
    trace["spans"].as_array().cloned().unwrap_or_default()
}

fn span_by_id(server: &TestServer, span_id: &str) -> Value {
    spans_of(server)
        .into_iter()
        .find(|s| s["span_id"] == span_id)
        .unwrap_or_else(|| panic!("no span {span_id}"))
}

#[test]
fn get_is_404_until_the_trace_is_stored_then_200_with_it() {
    let server = TestServer::builder()
        .trace_store_delay(Duration::from_millis(500))
        .start()
        .expect("start");
    assert_eq!(get(&server, id()).json(), not_found());
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    let early = get(&server, id());
    assert_eq!((early.status, early.json()), (404, not_found()));
    assert_eq!(early.body.len(), 66, "the measured size");
    assert_eq!(server.stored_trace(id()), None);

    assert!(server.wait_for_stored_traces(1, WAIT));
    let reply = get(&server, id());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    // The real server's field order.
    assert!(
        reply
            .body
            .starts_with(&format!(r#"{{"trace_id":"{TRACE_ID}","project_id":""#)),
        "{}",
        reply.body
    );
    let trace = reply.json();
    assert_eq!(server.stored_trace(id()), Some(trace.clone()));
    let project_id = trace["project_id"].as_str().expect("project id");
    assert!(Uuid::parse_str(project_id).is_ok());
    let mut expected = json!({
        "trace_id": TRACE_ID,
        "project_id": project_id,
        "name": "agent-run",
        "status": "COMPLETED",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "output": null,
        "metadata": {},
        "started_at": "2026-11-29T03:27:52.093623+00:00",
        "ended_at": "2026-11-29T03:27:53+00:00",
        "session_id": null,
        "user_id": null,
        "tags": ["a", "b"],
        "environment": null,
        "release": null,
        "spans": [{
            "span_id": SPAN_ID,
            "trace_id": TRACE_ID,
            "parent_span_id": null,
            "name": "llm-call",
            "kind": "LLM",
            "status": "OK",
            "input": null,
            "output": null,
            "model": null,
            "token_usage": {"prompt_tokens": 3, "completion_tokens": 5},
            "metadata": {},
            "started_at": "2026-11-29T03:27:52.100000+00:00",
            "ended_at": null,
            "error": null,
            "completion_start_time": null,
            "model_parameters": null,
            "cost": {"total": 0.0001},
            "latency_ms": null,
            "time_to_first_token_ms": null
        }],
        "total_tokens": 8,
        "total_cost": 0.0001
    });
    assert_eq!(trace, expected);
    // jsonb order inside stored JSON: shorter keys first.
    assert!(reply
        .body
        .contains(r#""token_usage":{"prompt_tokens":3,"completion_tokens":5}"#));

    // Another project does not see it; a re-send keeps the project and merges.
    let other = one(
        &server,
        Call::get(&trace_path(id())).header("X-Project-Name", "other"),
    );
    assert_eq!((other.status, other.json()), (404, not_found()));
    let resend = json!({
        "trace_id": TRACE_ID, "name": "renamed", "started_at": "2026-11-29T03:27:52Z",
        "tags": ["B", "a"], "metadata": {"k": 1}, "session_id": "s1"
    });
    assert_eq!(
        one(
            &server,
            Call::new(TRACES_PATH, resend.to_string()).header("X-Project-Name", "other")
        )
        .status,
        202
    );
    // Poll the database (not GET, which is rate limited) until the worker has run.
    let deadline = Instant::now() + WAIT;
    while server.stored_trace(id()).expect("stored")["name"] != "renamed" {
        assert!(Instant::now() < deadline, "the re-send was never stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    let trace = get(&server, id()).json();
    expected["name"] = json!("renamed");
    expected["input"] = Value::Null; // a jsonb column: an absent value overwrites
    expected["metadata"] = json!({"k": 1});
    expected["started_at"] = json!("2026-11-29T03:27:52+00:00");
    expected["session_id"] = json!("s1");
    expected["tags"] = json!(["B", "a", "b"]); // the sorted union
    assert_eq!(trace, expected);
}

#[test]
fn get_checks_key_project_and_trace_id_like_the_other_routes() {
    let server = stored();
    let bad_id = one(&server, Call::get("/traces/not-a-uuid"));
    assert_eq!(bad_id.status, 422);
    assert_eq!(
        bad_id.body,
        r#"{"detail":"Validation error","errors":[{"field":"path -> trace_id","message":"Input should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1"}]}"#
    );
    // Any spelling of the id the uuid crate takes.
    let upper = format!("/traces/{}", TRACE_ID.to_uppercase());
    assert_eq!(one(&server, Call::get(&upper)).status, 200);
    let no_key = one(&server, Call::get("/traces/not-a-uuid").omit("X-API-Key"));
    assert_eq!(no_key.status, 401);
    let no_project = one(&server, Call::get(&trace_path(id())).omit("X-Project-Name"));
    assert_eq!(no_project.status, 422);
    let put = one(
        &server,
        Call::get(&trace_path(id())).method(reqwest::Method::PUT),
    );
    assert_eq!((put.status, put.header("allow")), (405, Some("PATCH")));

    let requests = server.requests();
    let last = requests.last().expect("recorded");
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("PUT", &*trace_path(id()))
    );
    assert_eq!(
        requests.iter().filter(|r| r.method == "GET").count(),
        4,
        "GET requests are recorded with their method"
    );
}

#[test]
fn spans_are_404_until_the_trace_is_stored_then_201_and_visible_at_once() {
    let server = TestServer::builder()
        .trace_store_delay(Duration::from_millis(500))
        .start()
        .expect("start");
    let spans = json!([span("11111111-0000-4000-8000-000000000001", "late")]);
    assert_eq!(post_spans(&server, spans.clone()).json(), not_found());
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    let early = post_spans(&server, spans.clone());
    assert_eq!((early.status, early.json()), (404, not_found()));

    assert!(server.wait_for_stored_traces(1, WAIT));
    let added = post_spans(&server, spans);
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(
        added.body,
        r#"{"span_ids":["11111111-0000-4000-8000-000000000001"]}"#
    );
    let names: Vec<Value> = get(&server, id()).json()["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("llm-call"), json!("late")],
        "ordered by started_at"
    );

    // A span without an id gets one, and the answer names it.
    let anonymous = post_spans(
        &server,
        json!([{"name": "anon", "started_at": "2026-11-29T03:27:54Z"}]),
    );
    let generated = anonymous.json()["span_ids"][0].clone();
    assert!(Uuid::parse_str(generated.as_str().expect("id")).is_ok());
    assert_eq!(
        span_by_id(&server, generated.as_str().expect("id"))["name"],
        "anon"
    );
}

#[test]
fn spans_must_be_a_list_of_1_to_500() {
    let server = stored();
    let empty = post_spans(&server, json!([]));
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (
            422,
            r#"{"detail":"Validation error","errors":[{"field":"","message":"List should have at least 1 item after validation, not 0"}]}"#
        )
    );
    let many: Vec<Value> = (0..501)
        .map(|_| json!({"name": "s", "started_at": "2026-11-29T03:27:52Z"}))
        .collect();
    let too_many = post_spans(&server, Value::Array(many.clone()));
    assert_eq!(
        (too_many.status, too_many.body.as_str()),
        (
            422,
            r#"{"detail":"Validation error","errors":[{"field":"","message":"List should have at most 500 items after validation, not 501"}]}"#
        )
    );
    let exactly_500 = post_spans(&server, Value::Array(many[..500].to_vec()));
    assert_eq!(exactly_500.status, 201);
    assert_eq!(spans_of(&server).len(), 501);

    let bad_items = post_spans(&server, json!([{"started_at": "2026-11-29T03:27:52Z"}, 5]));
    let fields: Vec<Value> = bad_items.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, [json!("0 -> name"), json!("1")]);
    // Broken JSON is refused before the key is looked at, as FastAPI decodes first.
    let broken = one(
        &server,
        Call::new(&spans_path(id()), r#"[{"name":"a","#).omit("X-API-Key"),
    );
    assert_eq!(
        broken.body,
        r#"{"detail":"Validation error","errors":[{"field":"13","message":"JSON decode error"}]}"#
    );
    let both = one(&server, Call::new("/traces/not-a-uuid/spans", "[]"));
    let fields: Vec<Value> = both.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, [json!("path -> trace_id"), json!("")]);
    assert_eq!(spans_of(&server).len(), 501, "nothing stored by refusals");
}

#[test]
fn reposted_spans_are_updated_in_place_and_parents_stay_as_first_sent() {
    let server = stored();
    let unknown = "44444444-0000-4000-8000-000000000000";
    let a = "aaaaaaaa-0000-4000-8000-000000000001";
    let b = "bbbbbbbb-0000-4000-8000-000000000002";
    let mut child_of_trace_span = span(a, "a");
    child_of_trace_span["parent_span_id"] = json!(SPAN_ID);
    let mut child_of_a = span(b, "b");
    child_of_a["parent_span_id"] = json!(a);
    assert_eq!(
        post_spans(&server, json!([child_of_trace_span, child_of_a])).status,
        201
    );
    let mut orphan = span("cccccccc-0000-4000-8000-000000000003", "c");
    orphan["parent_span_id"] = json!(unknown);
    assert_eq!(post_spans(&server, json!([orphan])).status, 201);

    // Re-post `a` with another parent, and `b` twice in one request.
    let mut reparented = span(a, "a2");
    reparented["parent_span_id"] = json!(unknown);
    let reply = post_spans(&server, json!([reparented, span(b, "b2"), span(b, "b3")]));
    assert_eq!(reply.json()["span_ids"], json!([a, b, b]));

    let spans = spans_of(&server);
    assert_eq!(spans.len(), 4, "no duplicates: {spans:?}");
    let parent = |id: &str| span_by_id(&server, id)["parent_span_id"].clone();
    assert_eq!(parent(a), json!(SPAN_ID), "kept from the first insert");
    assert_eq!(parent(b), json!(a));
    assert_eq!(
        parent("cccccccc-0000-4000-8000-000000000003"),
        json!(unknown)
    );
    assert_eq!(span_by_id(&server, a)["name"], "a2");
    assert_eq!(span_by_id(&server, b)["name"], "b3");

    // Re-sending the trace does not remove added spans.
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    assert_eq!(spans_of(&server).len(), 4);
}

#[test]
fn an_upsert_overwrites_some_columns_keeps_others_and_merges_metadata() {
    let server = stored();
    let first = json!({
        "span_id": SPAN_ID, "name": "first", "kind": "LLM", "status": "OK",
        "started_at": "2026-11-29T03:27:52Z", "ended_at": "2026-11-29T03:27:53Z",
        "completion_start_time": "2026-11-29T03:27:52.25Z",
        "input": {"q": 1}, "output": "o", "model": "gpt", "error": "boom",
        "token_usage": {"prompt_tokens": 1}, "model_parameters": {"t": 0.5},
        "cost": {"total": 2}, "metadata": {"k": "old", "keep": 1}
    });
    assert_eq!(post_spans(&server, json!([first])).status, 201);
    let stored = span_by_id(&server, SPAN_ID);
    assert_eq!(stored["cost"], json!({"total": 2.0}), "dict[str, float]");
    assert_eq!(stored["latency_ms"], json!(1000.0));
    assert_eq!(stored["time_to_first_token_ms"], json!(250.0));

    let second = json!({
        "span_id": SPAN_ID, "name": "second", "started_at": "2026-11-29T03:27:52.5Z",
        "metadata": {"k": "new", "more": 2}
    });
    assert_eq!(post_spans(&server, json!([second])).status, 201);
    let span = span_by_id(&server, SPAN_ID);
    // Overwritten by what was posted, defaults included.
    assert_eq!(span["name"], "second");
    assert_eq!(span["kind"], "OTHER");
    assert_eq!(span["status"], "UNSET");
    assert_eq!(span["started_at"], "2026-11-29T03:27:52.500000+00:00");
    // jsonb columns: an absent value is bound as JSON null, which coalesce keeps (measured).
    for column in ["input", "output", "token_usage", "model_parameters", "cost"] {
        assert_eq!(span[column], Value::Null, "{column}");
    }
    // The other columns keep their value when the new one is absent.
    assert_eq!(span["model"], "gpt");
    assert_eq!(span["error"], "boom");
    assert_eq!(span["ended_at"], "2026-11-29T03:27:53+00:00");
    assert_eq!(
        span["completion_start_time"],
        "2026-11-29T03:27:52.250000+00:00"
    );
    assert_eq!(span["metadata"], json!({"k": "new", "keep": 1, "more": 2}));
    let trace = server.stored_trace(id()).expect("stored");
    assert_eq!(
        (trace["total_tokens"].clone(), trace["total_cost"].clone()),
        (json!(0), json!(0.0))
    );
}

#[test]
fn a_nul_anywhere_is_a_500_that_closes_the_connection_and_stores_nothing() {
    let server = stored();
    for field in ["name", "error", "model"] {
        let mut bad = span("dddddddd-0000-4000-8000-000000000004", "ok");
        bad[field] = json!("x\u{0}y");
        let body = json!([span("eeeeeeee-0000-4000-8000-000000000005", "fine"), bad]).to_string();
        let (mut stream, response) = raw_exchange(
            &server,
            &raw_request(&spans_path(id()), &body, server.api_key()),
        );
        assert!(response.starts_with("HTTP/1.1 500"), "{field}: {response}");
        assert!(response.ends_with("Internal Server Error"));
        assert!(
            peer_closed(&mut stream),
            "{field}: the connection is closed"
        );
    }
    let mut nested = span("dddddddd-0000-4000-8000-000000000004", "ok");
    nested["metadata"] = json!({"k": ["\u{0}"]});
    assert_eq!(post_spans(&server, json!([nested])).status, 500);
    // Unknown keys are dropped before the database sees them.
    let mut junk = span("dddddddd-0000-4000-8000-000000000004", "ok");
    junk["junk"] = json!("\u{0}");
    assert_eq!(post_spans(&server, json!([junk])).status, 201);
    assert_eq!(spans_of(&server).len(), 2, "only the span without a NUL");
}

#[test]
fn adding_spans_takes_its_write_time_without_blocking_other_connections() {
    let server = TestServer::builder()
        .lenient()
        .span_write_time(Duration::from_millis(20))
        .start()
        .expect("start");
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    let spans: Vec<Value> = (0..100)
        .map(|i| json!({"name": format!("s{i}"), "started_at": "2026-11-29T03:27:52Z"}))
        .collect();
    let body = Value::Array(spans).to_string();
    let (server, body) = (&server, &body);
    std::thread::scope(|scope| {
        let started = Instant::now();
        let writer = scope.spawn(move || {
            let reply = one(server, Call::new(&spans_path(id()), body.clone()));
            (reply.status, started.elapsed())
        });
        assert!(
            server.wait_for_requests(2, WAIT),
            "the spans request arrived"
        );
        // While the spans are being written, another connection is answered, and the spans
        // are not visible yet.
        let read = get(server, id());
        assert_eq!(read.status, 200);
        assert_eq!(read.json()["spans"].as_array().map(Vec::len), Some(1));
        assert_eq!(server.requests()[1].status, None, "still writing");
        let (status, took) = writer.join().expect("writer");
        assert_eq!(status, 201);
        assert!(took >= Duration::from_secs(2), "100 × 20 ms, took {took:?}");
    });
    assert_eq!(spans_of(server).len(), 101);
}

#[test]
fn faults_apply_to_concrete_paths_and_to_templates() {
    let server = stored();
    server.fail_next_on(&spans_path(id()), 1, Fault::Status(503));
    let other = Uuid::from_u128(1);
    server.fail_next_on(TRACE_PATH_TEMPLATE, 1, Fault::Status(502));
    assert_eq!(
        get(&server, other).status,
        502,
        "the template matches any id"
    );
    assert_eq!(get(&server, other).status, 404);
    let spans = json!([span("ffffffff-0000-4000-8000-000000000006", "f")]);
    assert_eq!(post_spans(&server, spans.clone()).status, 503);
    assert_eq!(
        spans_of(&server).len(),
        1,
        "a replaced answer stores nothing"
    );
    server.fail_next_on(SPANS_PATH_TEMPLATE, 1, Fault::StoreThenReset);
    assert!(one_result(&server, Call::new(&spans_path(id()), spans.to_string())).is_err());
    assert_eq!(spans_of(&server).len(), 2, "stored, then reset");
}
