//! Traces: validation and upserts, the worker queue behind the `202`, scores refused until
//! their trace is stored, traces with U+0000 never stored, the quota.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pandaprobe_testing::{TestServer, SCORES_PATH, TRACES_PATH};
use serde_json::{json, Value};
use uuid::Uuid;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).expect("uuid")
}

/// Default behaviour, except no rate limits and the given store time and workers.
fn server(base: Duration, per_span: Duration, workers: usize) -> TestServer {
    TestServer::builder()
        .no_rate_limits()
        .trace_store_time(base, per_span)
        .trace_store_workers(workers)
        .start()
        .expect("start")
}

#[test]
fn traces_are_accepted_with_202_and_upserted() {
    let server = lenient();
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
    let server = lenient();
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
fn scores_are_refused_with_500_until_their_trace_is_stored() {
    // Long enough that a loopback request always lands inside it, so the early check below
    // always runs (a conditional one would check nothing on a slow machine).
    let store_time = ms(1000);
    let server = server(store_time, Duration::ZERO, 2);
    // A trace that was never sent: the foreign key fails.
    let unknown = score_for("00000000-0000-4000-8000-000000000000");
    let reply = one(&server, Call::new(SCORES_PATH, unknown));
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body, "Internal Server Error");

    let sent_at = Instant::now();
    let trace = one(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert_eq!(trace.status, 202);
    let early = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    // The trace is stored no earlier than `sent_at + store_time`.
    assert!(
        sent_at.elapsed() < store_time,
        "a loopback request took longer than {store_time:?}: the early check cannot run"
    );
    assert_eq!(early.status, 500);
    assert_eq!(server.trace_stored_at(uuid(TRACE_ID)), None);
    assert!(server.wait_for_stored_traces(1, WAIT));
    let stored_at = server.trace_stored_at(uuid(TRACE_ID)).expect("stored");
    assert!(stored_at >= sent_at + store_time);
    let late = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(late.status, 201);
    assert_eq!(server.score_count(), 1);
}

#[test]
fn store_time_grows_with_spans_and_traces_queue_for_the_workers() {
    let (base, per_span) = (ms(10), ms(5));
    let server = server(base, per_span, 2);
    let (a, b, c) = (
        "00000000-0000-4000-8000-00000000000a",
        "00000000-0000-4000-8000-00000000000b",
        "00000000-0000-4000-8000-00000000000c",
    );
    let started = Instant::now();
    let calls = [
        Call::new(TRACES_PATH, trace_with_spans(a, 100)), // 510 ms, worker 1
        Call::new(TRACES_PATH, trace_with_spans(b, 100)), // 510 ms, worker 2
        Call::new(TRACES_PATH, trace_with_spans(c, 0)),   // 10 ms, after a
    ];
    assert_eq!(statuses(&server, &calls), vec![202; 3]);
    let answered = Instant::now();
    assert_eq!(server.trace_count(), 3);
    assert_eq!(server.stored_trace_count(), 0);
    assert!(server.wait_for_stored_traces(3, WAIT));
    assert!(started.elapsed() >= ms(510));

    let at = |id| server.trace_stored_at(uuid(id)).expect("stored");
    let cost = base + per_span * 100;
    assert!(at(a) >= started + cost && at(a) <= answered + cost);
    assert!(at(b) >= at(a));
    // The small trace waited for the first worker to be free.
    assert_eq!(at(c), at(a) + base);
    let records = server.traces();
    assert!(records.iter().all(|t| t.stored_at.is_some()));
    assert_eq!(records[2].stored_at, Some(at(c)));
}

#[test]
fn waiting_for_stored_traces_wakes_when_they_are_due() {
    let server = server(ms(250), Duration::ZERO, 1);
    let sent = Instant::now();
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    assert_eq!(server.traces()[0].stored_at, None);
    assert!(!server.wait_for_stored_traces(1, ms(20)) || sent.elapsed() >= ms(250));
    assert!(server.wait_for_stored_traces(1, WAIT));
    let waited = sent.elapsed();
    assert!(waited >= ms(250));
    assert!(waited < ms(2500), "woke late: {waited:?}");
    assert!(server.traces()[0].stored_at.is_some());
    assert!(server.wait_for_stored_traces(0, Duration::ZERO));
}

#[test]
fn traces_with_a_nul_anywhere_are_accepted_and_never_stored() {
    let server = server(Duration::ZERO, Duration::ZERO, 2);
    let span = |key: &str, value: Value| json!([{"name": "s", "started_at": "2026-11-29T03:27:52Z", key: value}]);
    let poisoned: Vec<(&str, Value)> = vec![
        ("name", json!("run\u{0}")),
        (
            "input",
            json!({"messages": [{"role": "user", "content": "a\u{0}"}]}),
        ),
        ("output", json!("\u{0}")),
        ("metadata", json!({"key\u{0}": 1})),
        ("tags", json!(["ok", "t\u{0}"])),
        ("session_id", json!("s\u{0}")),
        ("user_id", json!("u\u{0}")),
        ("environment", json!("e\u{0}")),
        ("release", json!("r\u{0}")),
        ("spans", span("name", json!("\u{0}"))),
        ("spans", span("error", json!("boom\u{0}"))),
        ("spans", span("model", json!("m\u{0}"))),
        ("spans", span("metadata", json!({"deep": ["\u{0}"]}))),
        ("spans", span("cost", json!({"\u{0}": 1.0}))),
    ];
    let mut ids = Vec::new();
    for (i, (key, value)) in poisoned.iter().enumerate() {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let mut body = trace_body();
        body["trace_id"] = json!(id);
        body[*key] = value.clone();
        let reply = one(&server, Call::new(TRACES_PATH, body.to_string()));
        assert_eq!(reply.status, 202, "{key}");
        ids.push(id);
    }
    // A NUL under a key the server ignores is harmless.
    let ignored = trace_with("junk", json!("\u{0}"));
    assert_eq!(one(&server, Call::new(TRACES_PATH, ignored)).status, 202);

    assert_eq!(server.trace_count(), poisoned.len() + 1);
    assert!(server.wait_for_stored_traces(1, WAIT));
    assert_eq!(server.stored_trace_count(), 1);
    assert!(!server.wait_for_stored_traces(2, ms(50)));
    for id in &ids {
        assert_eq!(server.trace_stored_at(uuid(id)), None, "{id}");
        let reply = one(&server, Call::new(SCORES_PATH, score_for(id)));
        assert_eq!(reply.status, 500);
    }
    assert!(server.trace_stored_at(uuid(TRACE_ID)).is_some());
}

#[test]
fn an_unstorable_trace_still_keeps_a_worker_busy() {
    let server = server(ms(150), Duration::ZERO, 1);
    let sent = Instant::now();
    let calls = [
        Call::new(TRACES_PATH, trace_with("tags", json!(["\u{0}"]))),
        Call::new(
            TRACES_PATH,
            trace_with_spans("00000000-0000-4000-8000-0000000000ff", 0),
        ),
    ];
    assert_eq!(statuses(&server, &calls), vec![202, 202]);
    assert!(server.wait_for_stored_traces(1, WAIT));
    let stored = server
        .trace_stored_at(uuid("00000000-0000-4000-8000-0000000000ff"))
        .expect("stored");
    assert!(stored >= sent + ms(300));
    assert_eq!(server.trace_stored_at(uuid(TRACE_ID)), None);
}

#[test]
fn re_sending_never_unstores_and_a_clean_resend_stores() {
    let server = server(Duration::ZERO, Duration::ZERO, 2);
    let calls = [
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(TRACES_PATH, trace_with("name", json!("\u{0}"))),
    ];
    assert_eq!(statuses(&server, &calls), vec![202, 202]);
    assert!(server.trace_stored_at(uuid(TRACE_ID)).is_some());
    assert_eq!(
        one(&server, Call::new(SCORES_PATH, score_body().to_string())).status,
        201
    );
    // The record shows the latest body; the database keeps the stored trace.
    assert_eq!(server.traces()[0].body["name"], "\u{0}");

    let other = "00000000-0000-4000-8000-000000000042";
    let mut poisoned = trace_body();
    poisoned["trace_id"] = json!(other);
    poisoned["output"] = json!("\u{0}");
    let clean = trace_with_spans(other, 1);
    let calls = [
        Call::new(TRACES_PATH, poisoned.to_string()),
        Call::new(TRACES_PATH, clean),
    ];
    assert_eq!(statuses(&server, &calls), vec![202, 202]);
    assert!(server.trace_stored_at(uuid(other)).is_some());
    assert_eq!(server.stored_trace_count(), 2);
}

#[test]
fn reset_records_keeps_the_database() {
    let server = server(Duration::ZERO, Duration::ZERO, 2);
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    server.reset_records();
    assert_eq!(server.trace_count(), 0);
    assert_eq!(server.stored_trace_count(), 0);
    assert!(server.trace_stored_at(uuid(TRACE_ID)).is_some());
    assert_eq!(
        one(&server, Call::new(SCORES_PATH, score_body().to_string())).status,
        201
    );
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    assert_eq!(server.stored_trace_count(), 1);
}

#[test]
fn lenient_stores_traces_when_they_are_accepted_and_takes_any_score() {
    let server = lenient();
    assert_eq!(
        one(
            &server,
            Call::new(
                SCORES_PATH,
                score_for("00000000-0000-4000-8000-000000000001")
            )
        )
        .status,
        201
    );
    let accepted = Instant::now();
    let reply = one(
        &server,
        Call::new(TRACES_PATH, trace_with_spans(TRACE_ID, 500)),
    );
    assert_eq!(reply.status, 202);
    let stored_at = server
        .trace_stored_at(uuid(TRACE_ID))
        .expect("stored at once");
    assert!(stored_at >= accepted);
    assert_eq!(server.stored_trace_count(), 1);
    assert!(server.scores()[0].stored_at.is_some());
}

#[test]
fn the_quota_refuses_valid_traces_once_used_up() {
    let server = TestServer::builder()
        .lenient()
        .trace_quota(2)
        .start()
        .expect("start");
    let calls = [
        Call::new(TRACES_PATH, trace_body().to_string()),
        // A re-send counts against the quota, like on the real server.
        Call::new(TRACES_PATH, trace_body().to_string()),
        // Validation comes first.
        Call::new(TRACES_PATH, trace_without("name")),
        Call::new(
            TRACES_PATH,
            trace_with_spans("00000000-0000-4000-8000-000000000002", 0),
        ),
        // Scores have no quota here.
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![202, 202, 422, 429, 201]);
    let reply = one(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.json(),
        json!({"detail": "You've reached the traces limit (2) for your HOBBY plan. Please upgrade to continue."})
    );
    assert_eq!(server.trace_count(), 1);
}

#[test]
fn waiting_for_one_trace_returns_it_once_stored_and_none_for_one_never_sent() {
    let (a, b) = (
        "00000000-0000-4000-8000-00000000000a",
        "00000000-0000-4000-8000-00000000000b",
    );
    // Two workers, so `b` (no spans) is stored while `a` (100 spans) still waits.
    let server = server(ms(10), ms(5), 2);
    let calls = [
        Call::new(TRACES_PATH, trace_with_spans(a, 100)),
        Call::new(TRACES_PATH, trace_with_spans(b, 0)),
    ];
    assert_eq!(statuses(&server, &calls), vec![202; 2]);
    let trace = server
        .wait_for_stored_trace(uuid(a), WAIT)
        .expect("stored in time");
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(100));
    assert!(
        server.trace_stored_at(uuid(b)).is_some(),
        "b was stored first"
    );
    let never = "00000000-0000-4000-8000-00000000000c";
    assert_eq!(server.wait_for_stored_trace(uuid(never), ms(50)), None);
}
