//! Traces and spans against the in-process test server: the exact body of a trace, spans that
//! end with their trace, guards that cross threads and `.await`, the server's limits, the
//! ordering of a trace and its scores (counting the 500s a delaying server answers), the
//! counters, the global client and scores made through a trace.
//!
//! Run: `cargo test --test traces -- --nocapture` (prints the 500 counts and
//! the run time of 1,000 trace-then-score pairs).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use pandaprobe::testing::{ReceivedRequest, TestServer, SCORES_PATH, TRACES_PATH};
use pandaprobe::{
    Client, ClientBuilder, Score, ScoreError, SpanKind, SpanStatus, Stats, TraceStatus,
    MAX_SPANS_PER_TRACE,
};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

const FLUSH: Duration = Duration::from_secs(30);

/// The contract's order of a trace's top-level keys.
const TRACE_KEYS: [&str; 14] = [
    "trace_id",
    "name",
    "status",
    "started_at",
    "ended_at",
    "input",
    "output",
    "metadata",
    "session_id",
    "user_id",
    "environment",
    "release",
    "tags",
    "spans",
];

/// The contract's order of a span's keys.
const SPAN_KEYS: [&str; 16] = [
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "status",
    "input",
    "output",
    "model",
    "token_usage",
    "metadata",
    "started_at",
    "ended_at",
    "error",
    "completion_start_time",
    "model_parameters",
    "cost",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A client for `server` with fast retries, so that a failing test fails in seconds.
fn builder(server: &TestServer) -> ClientBuilder {
    Client::builder()
        .api_key(server.api_key())
        .project_name("traces-tests")
        .endpoint(server.url())
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .request_timeout(Duration::from_secs(5))
        .max_retry_after(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(10))
}

fn start_server() -> TestServer {
    TestServer::start().expect("start the test server")
}

fn requests_to(server: &TestServer, path: &str) -> Vec<ReceivedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

/// The one trace request the server received, as raw bytes and parsed.
fn only_trace_request(server: &TestServer) -> (Vec<u8>, Value) {
    let requests = requests_to(server, TRACES_PATH);
    assert_eq!(requests.len(), 1, "exactly one POST /traces: {requests:#?}");
    let request = &requests[0];
    assert_eq!(request.status, Some(202), "the server accepted the trace");
    let body = request.json().expect("the trace body is JSON");
    (request.body.to_vec(), body)
}

/// The keys of a JSON object in the order they appear in the raw text.
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(KeysVisitor)
    }
}

#[derive(Deserialize)]
struct SpanKeys {
    #[serde(default)]
    spans: Vec<Keys>,
}

/// Top-level keys, then each span's keys, in raw order.
fn raw_key_order(raw: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let top: Keys = serde_json::from_slice(raw).expect("the raw body is a JSON object");
    let spans: SpanKeys = serde_json::from_slice(raw).expect("the raw body's spans");
    (top.0, spans.spans.into_iter().map(|k| k.0).collect())
}

/// `keys` appear in the same relative order as in `contract`, and every one is in it.
fn assert_in_contract_order(keys: &[String], contract: &[&str], what: &str) {
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            contract
                .iter()
                .position(|c| c == k)
                .unwrap_or_else(|| panic!("{what}: key {k:?} is not in the contract"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{what}: keys {keys:?} are not in the contract's order {contract:?}"
    );
}

fn assert_no_null(value: &Value, path: &str) {
    match value {
        Value::Null => panic!("null at {path}"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_no_null(item, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                assert_no_null(v, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

/// RFC 3339 in UTC with exactly six fractional digits: `2026-11-29T03:27:52.093623+00:00`.
/// Fixed width, so such strings compare in time order as text.
fn assert_timestamp(value: &Value, what: &str) -> String {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    const PATTERN: &str = "dddd-dd-ddTdd:dd:dd.dddddd+00:00";
    assert_eq!(s.len(), PATTERN.len(), "{what} {s:?}: wrong length");
    for (c, p) in s.bytes().zip(PATTERN.bytes()) {
        let ok = if p == b'd' {
            c.is_ascii_digit()
        } else {
            c == p
        };
        assert!(ok, "{what} {s:?} does not look like {PATTERN}");
    }
    s.to_owned()
}

/// Now, in the SDK's timestamp format, for comparing as text.
fn now_stamp() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    time::OffsetDateTime::from(SystemTime::now())
        .format(format)
        .expect("format now")
}

fn assert_uuid(value: &Value, what: &str) -> Uuid {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let id = Uuid::parse_str(s).unwrap_or_else(|e| panic!("{what} {s:?} is not a UUID: {e}"));
    assert_eq!(
        s,
        id.hyphenated().to_string(),
        "{what}: lower-case hyphenated"
    );
    id
}

/// Validates and removes the timestamps of a trace body so that the rest can be compared
/// exactly; returns the removed ones by key (`"spans[i].key"` for spans).
fn take_timestamps(body: &mut Value) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let top = body.as_object_mut().expect("the trace body is an object");
    for key in ["started_at", "ended_at"] {
        if let Some(v) = top.remove(key) {
            out.insert(key.to_owned(), assert_timestamp(&v, key));
        }
    }
    if let Some(Value::Array(spans)) = top.get_mut("spans") {
        for (i, span) in spans.iter_mut().enumerate() {
            let span = span.as_object_mut().expect("a span is an object");
            for key in ["started_at", "ended_at", "completion_start_time"] {
                if let Some(v) = span.remove(key) {
                    let what = format!("spans[{i}].{key}");
                    out.insert(what.clone(), assert_timestamp(&v, &what));
                }
            }
        }
    }
    out
}

fn assert_balanced(stats: &Stats) {
    assert!(stats.scores.is_balanced(), "scores unbalanced: {stats:#?}");
    assert!(stats.traces.is_balanced(), "traces unbalanced: {stats:#?}");
}

fn assert_all_sent(stats: &Stats, traces: u64, scores: u64) {
    assert_balanced(stats);
    assert_eq!(stats.traces.accepted, traces, "{stats:#?}");
    assert_eq!(stats.traces.sent, traces, "{stats:#?}");
    assert_eq!(stats.traces.pending, 0, "{stats:#?}");
    assert_eq!(stats.traces.dropped.total(), 0, "{stats:#?}");
    assert_eq!(stats.scores.accepted, scores, "{stats:#?}");
    assert_eq!(stats.scores.sent, scores, "{stats:#?}");
    assert_eq!(stats.scores.pending, 0, "{stats:#?}");
    assert_eq!(stats.scores.dropped.total(), 0, "{stats:#?}");
}

/// Recognises one kind of [`ScoreError`].
type ErrorCheck = fn(&ScoreError) -> bool;

fn assert_send<T: Send>(_: &T) {}
fn assert_send_sync<T: Send + Sync>() {}

// ---------------------------------------------------------------------------------------------
// 1. The exact body
// ---------------------------------------------------------------------------------------------

#[test]
fn trace_with_nested_spans_and_every_field_has_the_exact_body() {
    let server = start_server();
    let client = builder(&server)
        .environment("prod")
        .release("1.2.3")
        .build()
        .expect("build the client");
    let before = now_stamp();

    let trace = client
        .trace("agent")
        .session_id("sess-42")
        .user_id("user-7")
        .tags(["prod"])
        .tags(vec![String::from("canary")])
        .input(json!({"messages": [{"role": "user", "content": "hi"}]}))
        .metadata(json!({"team": "search", "attempt": 1}))
        .start();
    let trace_id = trace.trace_id();
    assert_eq!(trace_id.get_version_num(), 4, "a fresh v4 UUID");

    let agent = trace.span("plan", SpanKind::Agent);
    agent.set_input(json!({"goal": "answer"}));
    let llm = agent.span("llm-call", SpanKind::Llm);
    llm.set_input(json!({"messages": [{"role": "user", "content": "hi"}]}));
    llm.set_model("gpt-x");
    llm.set_model_parameters(json!({"temperature": 0.2, "max_tokens": 64}));
    llm.set_completion_start();
    llm.set_output(json!({"messages": [{"role": "assistant", "content": "hello"}]}));
    llm.set_token_usage(3, 5);
    llm.set_cost(0.0001);
    llm.set_metadata(json!({"provider": "local"}));
    llm.set_status(SpanStatus::Ok);
    let (llm_id, agent_id) = (llm.span_id(), agent.span_id());
    assert_eq!(llm.trace_id(), trace_id);
    llm.end();
    let tool = agent.span("search", SpanKind::Tool);
    let fetch = tool.span("fetch", SpanKind::Retriever);
    let (tool_id, fetch_id) = (tool.span_id(), fetch.span_id());
    tool.set_error("timeout");
    drop(fetch);
    tool.end();
    agent.set_output(json!("done"));
    agent.end();
    let chain = trace.span("post-process", SpanKind::Chain);
    chain.set_metadata(json!("not an object"));
    let chain_id = chain.span_id();
    chain.end();
    let embed = trace.span("embed", SpanKind::Embedding);
    let embed_id = embed.span_id();
    embed.end();
    let misc = trace.span("misc", SpanKind::Other);
    let misc_id = misc.span_id();
    misc.end();

    trace.set_output(json!({"messages": [{"role": "assistant", "content": "hello"}]}));
    trace.set_status(TraceStatus::Error);
    trace.end();
    client.flush(FLUSH).expect("flush");
    let after = now_stamp();

    let (raw, mut body) = only_trace_request(&server);
    assert_eq!(server.traces().len(), 1);
    assert_eq!(
        server.traces()[0].id,
        trace_id,
        "stored under the trace's id"
    );
    assert_no_null(&body, "$");

    // Key order as sent: the contract's, top level exactly.
    let (top_keys, span_keys) = raw_key_order(&raw);
    assert_eq!(top_keys, TRACE_KEYS, "top-level keys in contract order");
    assert_eq!(span_keys.len(), 7);
    for (i, keys) in span_keys.iter().enumerate() {
        assert_in_contract_order(keys, &SPAN_KEYS, &format!("spans[{i}]"));
    }

    // Every id is a UUID.
    assert_eq!(assert_uuid(&body["trace_id"], "trace_id"), trace_id);
    let spans = body["spans"].as_array().expect("spans is an array").clone();
    for (i, span) in spans.iter().enumerate() {
        assert_uuid(&span["span_id"], &format!("spans[{i}].span_id"));
        if let Some(parent) = span.get("parent_span_id") {
            assert_uuid(parent, &format!("spans[{i}].parent_span_id"));
        }
    }

    // Timestamps: format, order, and within the test's run.
    let ts = take_timestamps(&mut body);
    let t = |k: &str| {
        ts.get(k)
            .unwrap_or_else(|| panic!("no timestamp {k}"))
            .as_str()
    };
    assert!(
        before.as_str() <= t("started_at"),
        "{before} <= {}",
        t("started_at")
    );
    assert!(t("started_at") <= t("ended_at"));
    assert!(
        t("ended_at") <= after.as_str(),
        "{} <= {after}",
        t("ended_at")
    );
    for i in 0..7 {
        let (start, end) = (
            t(&format!("spans[{i}].started_at")),
            t(&format!("spans[{i}].ended_at")),
        );
        assert!(t("started_at") <= start, "span {i} starts within the trace");
        assert!(start <= end, "span {i} ends after it starts");
        assert!(end <= t("ended_at"), "span {i} ends within the trace");
    }
    // Children run inside their parents (llm=1 and search=2 in plan=0; fetch=3 in search=2).
    for (child, parent) in [(1, 0), (2, 0), (3, 2)] {
        assert!(
            t(&format!("spans[{parent}].started_at")) <= t(&format!("spans[{child}].started_at"))
        );
        assert!(t(&format!("spans[{child}].ended_at")) <= t(&format!("spans[{parent}].ended_at")));
    }
    let cst = t("spans[1].completion_start_time");
    assert!(t("spans[1].started_at") <= cst && cst <= t("spans[1].ended_at"));
    assert_eq!(ts.len(), 2 + 7 * 2 + 1, "no other timestamps: {ts:?}");

    // Everything else, exactly.
    let expected = json!({
        "trace_id": trace_id.to_string(),
        "name": "agent",
        "status": "ERROR",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "output": {"messages": [{"role": "assistant", "content": "hello"}]},
        "metadata": {"team": "search", "attempt": 1},
        "session_id": "sess-42",
        "user_id": "user-7",
        "environment": "prod",
        "release": "1.2.3",
        "tags": ["prod", "canary"],
        "spans": [
            {
                "span_id": agent_id.to_string(),
                "name": "plan",
                "kind": "AGENT",
                "status": "UNSET",
                "input": {"goal": "answer"},
                "output": "done",
            },
            {
                "span_id": llm_id.to_string(),
                "parent_span_id": agent_id.to_string(),
                "name": "llm-call",
                "kind": "LLM",
                "status": "OK",
                "input": {"messages": [{"role": "user", "content": "hi"}]},
                "output": {"messages": [{"role": "assistant", "content": "hello"}]},
                "model": "gpt-x",
                "token_usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
                "metadata": {"provider": "local"},
                "model_parameters": {"temperature": 0.2, "max_tokens": 64},
                "cost": {"total": 0.0001},
            },
            {
                "span_id": tool_id.to_string(),
                "parent_span_id": agent_id.to_string(),
                "name": "search",
                "kind": "TOOL",
                "status": "ERROR",
                "error": "timeout",
            },
            {
                "span_id": fetch_id.to_string(),
                "parent_span_id": tool_id.to_string(),
                "name": "fetch",
                "kind": "RETRIEVER",
                "status": "UNSET",
            },
            {
                "span_id": chain_id.to_string(),
                "name": "post-process",
                "kind": "CHAIN",
                "status": "UNSET",
                "metadata": {"value": "not an object"},
            },
            {
                "span_id": embed_id.to_string(),
                "name": "embed",
                "kind": "EMBEDDING",
                "status": "UNSET",
            },
            {
                "span_id": misc_id.to_string(),
                "name": "misc",
                "kind": "OTHER",
                "status": "UNSET",
            },
        ],
    });
    assert_eq!(body, expected);

    let stats = client.stats();
    assert_all_sent(&stats, 1, 0);
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.spans_dropped, 0);
}

#[test]
fn minimal_trace_omits_every_absent_key() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let trace = client.start_trace("bare");
    let span = trace.span("step", SpanKind::default());
    span.end();
    trace.end();
    client.flush(FLUSH).expect("flush");

    let (raw, body) = only_trace_request(&server);
    assert_no_null(&body, "$");
    let (top, spans) = raw_key_order(&raw);
    assert_eq!(
        top,
        [
            "trace_id",
            "name",
            "status",
            "started_at",
            "ended_at",
            "spans"
        ]
    );
    assert_eq!(
        spans,
        [[
            "span_id",
            "name",
            "kind",
            "status",
            "started_at",
            "ended_at"
        ]]
    );
    assert_eq!(body["status"], "COMPLETED", "the default status");
    assert_eq!(body["spans"][0]["kind"], "OTHER", "the default kind");
    assert_eq!(
        body["spans"][0]["status"], "UNSET",
        "the default span status"
    );
    assert_all_sent(&client.stats(), 1, 0);
}

/// The SDK promises "keys omitted when absent, never null": a `Value::Null` handed to a setter
/// means "not set", not `"input":null` or `{"value":null}`.
#[test]
fn null_json_values_are_left_out_of_the_body() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let trace = client.trace("nulls").input(Value::Null).start();
    trace.set_output(Value::Null);
    trace.set_metadata(Value::Null);
    let span = trace.span("s", SpanKind::Llm);
    span.set_input(Value::Null);
    span.set_metadata(Value::Null);
    span.set_model_parameters(Value::Null);
    span.end();
    trace.end();
    client.flush(FLUSH).expect("flush");
    let (_, body) = only_trace_request(&server);
    assert_no_null(&body, "$");
    assert!(body.get("metadata").is_none(), "{body}");
    assert!(body["spans"][0].get("metadata").is_none(), "{body}");
}

// ---------------------------------------------------------------------------------------------
// 2. Open spans and dropped guards
// ---------------------------------------------------------------------------------------------

#[test]
fn a_span_still_open_when_its_trace_ends_ends_with_it() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let trace = client.start_trace("open-span");
    let closed = trace.span("closed", SpanKind::Tool);
    closed.end();
    let open = trace.span("open", SpanKind::Llm);
    let open_child = open.span("open-child", SpanKind::Tool);
    open.set_model("before-end");
    trace.end();

    // The guards outlive the trace: setting, opening and dropping them now changes nothing.
    open.set_model("after-end");
    open.set_error("after-end");
    let late = open.span("opened-after-end", SpanKind::Other);
    drop(late);
    drop(open_child);
    drop(open);
    client.flush(FLUSH).expect("flush");

    let (_, body) = only_trace_request(&server);
    assert_no_null(&body, "$");
    let trace_end = assert_timestamp(&body["ended_at"], "ended_at");
    let spans = body["spans"].as_array().expect("spans");
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        ["closed", "open", "open-child"],
        "no span opened after the end"
    );
    for span in &spans[1..] {
        let end = assert_timestamp(&span["ended_at"], "open span's ended_at");
        assert_eq!(
            end, trace_end,
            "an open span ends at the trace's end: {span}"
        );
    }
    let closed_end = assert_timestamp(&spans[0]["ended_at"], "closed span's ended_at");
    assert!(closed_end <= trace_end);
    assert_eq!(
        spans[1]["model"], "before-end",
        "setters after the end do nothing"
    );
    assert!(spans[1].get("error").is_none(), "{}", spans[1]);
    assert_eq!(spans[1]["status"], "UNSET");
    let stats = client.stats();
    assert_all_sent(&stats, 1, 0);
    assert_eq!(
        stats.spans_dropped, 0,
        "a span opened after the end is not a dropped span"
    );
}

#[test]
fn spans_of_a_trace_dropped_without_end_still_arrive() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let (trace_id, first_id, open_id);
    {
        let trace = client.start_trace("dropped");
        trace_id = trace.trace_id();
        let first = trace.span("first", SpanKind::Retriever);
        first_id = first.span_id();
        first.set_output(json!(["doc-1", "doc-2"]));
        drop(first);
        let open = trace.span("still-open", SpanKind::Llm);
        open_id = open.span_id();
        drop(trace); // the guard goes first, the span after it
        drop(open);
    }
    client.flush(FLUSH).expect("flush");

    let (_, body) = only_trace_request(&server);
    assert_no_null(&body, "$");
    assert_eq!(assert_uuid(&body["trace_id"], "trace_id"), trace_id);
    assert_eq!(body["status"], "COMPLETED");
    let trace_end = assert_timestamp(&body["ended_at"], "ended_at");
    let spans = body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    assert_eq!(assert_uuid(&spans[0]["span_id"], "span_id"), first_id);
    assert_eq!(spans[0]["output"], json!(["doc-1", "doc-2"]));
    assert_eq!(assert_uuid(&spans[1]["span_id"], "span_id"), open_id);
    assert_eq!(
        assert_timestamp(&spans[1]["ended_at"], "open span's ended_at"),
        trace_end
    );
    assert_all_sent(&client.stats(), 1, 0);
}

#[test]
fn a_trace_that_outlives_its_client_handle_is_still_delivered() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let trace = client.start_trace("outlives");
    let trace_id = trace.trace_id();
    trace
        .score(Score::boolean(trace_id, "ok", true))
        .expect("score through the trace");
    drop(client); // the trace keeps the client alive
    trace.end(); // the last handle goes: shutdown delivers what is queued
    assert_eq!(server.traces().len(), 1, "delivered by the shutdown");
    assert_eq!(server.traces()[0].id, trace_id);
    assert_eq!(server.scores().len(), 1, "the trace's score too");
    assert_eq!(server.scores()[0].body["trace_id"], trace_id.to_string());
}

// ---------------------------------------------------------------------------------------------
// 3. Send: threads and tasks
// ---------------------------------------------------------------------------------------------

#[test]
fn trace_and_span_guards_are_send_and_sync() {
    assert_send_sync::<pandaprobe::Trace>();
    assert_send_sync::<pandaprobe::Span>();
    assert_send_sync::<pandaprobe::TraceBuilder>();
}

#[test]
fn a_trace_moves_into_a_thread_and_spans_come_from_many_threads() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");

    // Started here, filled and ended on another thread.
    let trace = client.start_trace("moved");
    let moved_id = trace.trace_id();
    let worker = std::thread::spawn(move || {
        let span = trace.span("on-thread", SpanKind::Tool);
        let child = span.span("child", SpanKind::Llm);
        child.set_model("m");
        drop(child);
        drop(span);
        trace.end();
    });
    worker.join().expect("the thread did not panic");

    // One trace shared by reference with four threads, each opening spans.
    let shared = client.start_trace("shared");
    let shared_id = shared.trace_id();
    std::thread::scope(|s| {
        for t in 0..4 {
            let trace = &shared;
            s.spawn(move || {
                for i in 0..25 {
                    let span = trace.span(format!("t{t}-s{i}"), SpanKind::Chain);
                    span.span(format!("t{t}-s{i}-child"), SpanKind::Other).end();
                    span.end();
                }
            });
        }
    });
    shared.end();
    client.flush(FLUSH).expect("flush");

    let traces = server.traces();
    assert_eq!(traces.len(), 2);
    let moved = traces
        .iter()
        .find(|t| t.id == moved_id)
        .expect("the moved trace");
    let spans = moved.body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    let shared = traces
        .iter()
        .find(|t| t.id == shared_id)
        .expect("the shared trace");
    let spans = shared.body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 200);
    let by_name: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["name"].as_str().expect("name"), &s["span_id"]))
        .collect();
    assert_eq!(by_name.len(), 200, "every span name once");
    for span in spans {
        let name = span["name"].as_str().expect("name");
        if let Some(parent) = name.strip_suffix("-child") {
            assert_eq!(&span["parent_span_id"], by_name[parent], "{name}");
        } else {
            assert!(span.get("parent_span_id").is_none(), "{name}");
        }
        assert_timestamp(&span["ended_at"], "ended_at");
    }
    assert_all_sent(&client.stats(), 2, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_crosses_await_points_in_a_tokio_task() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let trace = client
        .trace("async-agent")
        .session_id("async-session")
        .start();
    let trace_id = trace.trace_id();

    let task = async move {
        let span = trace.span("llm-call", SpanKind::Llm);
        tokio::task::yield_now().await;
        span.set_model("gpt-x");
        // A real suspension: the task may resume on the other worker thread.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let tool = span.span("tool", SpanKind::Tool);
        tokio::task::yield_now().await;
        tool.end();
        span.set_token_usage(1, 2);
        span.end();
        trace
            .score(Score::numeric(trace.trace_id(), "relevance", 0.75))
            .expect("score through the trace");
        tokio::task::yield_now().await;
        trace.end();
    };
    assert_send(&task);
    tokio::spawn(task).await.expect("the task did not panic");

    // Many traces at once, each in its own task.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = client.clone();
        tasks.spawn(async move {
            let trace = client.start_trace(format!("task-{i}"));
            let span = trace.span("step", SpanKind::Agent);
            tokio::task::yield_now().await;
            span.end();
            tokio::time::sleep(Duration::from_millis(1)).await;
            trace.end();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a task did not panic");
    }
    client.flush_async(FLUSH).await.expect("flush");

    assert_eq!(server.traces().len(), 21);
    let first = server
        .traces()
        .into_iter()
        .find(|t| t.id == trace_id)
        .expect("the async trace");
    let spans = first.body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["model"], "gpt-x");
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert_eq!(first.body["session_id"], "async-session");
    assert_eq!(server.scores().len(), 1);
    assert_eq!(server.scores()[0].body["trace_id"], trace_id.to_string());
    assert_all_sent(&client.stats(), 21, 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Over the server's limits
// ---------------------------------------------------------------------------------------------

#[test]
fn more_than_500_spans_sends_exactly_500_and_counts_the_rest() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let extra = 23;
    let trace = client.start_trace("many-spans");
    let root = trace.span("root", SpanKind::Agent);
    let mut first_ids = Vec::new();
    for i in 0..(MAX_SPANS_PER_TRACE - 1 + extra) {
        let span = root.span(format!("s{i}"), SpanKind::Tool);
        // Setters on a span left out are harmless.
        span.set_model("m");
        if first_ids.len() < MAX_SPANS_PER_TRACE - 1 {
            first_ids.push(span.span_id());
        }
        span.end();
    }
    root.end();
    trace.end();
    client.flush(FLUSH).expect("flush");

    assert_eq!(server.status_count(422), 0, "the server rejected nothing");
    assert_eq!(server.status_count(202), 1);
    let (_, body) = only_trace_request(&server);
    let spans = body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), MAX_SPANS_PER_TRACE, "exactly the limit");
    let sent_ids: Vec<Uuid> = spans[1..]
        .iter()
        .map(|s| assert_uuid(&s["span_id"], "span_id"))
        .collect();
    assert_eq!(sent_ids, first_ids, "the first spans are kept, in order");
    let stats = client.stats();
    assert_eq!(stats.spans_dropped, extra as u64);
    assert_all_sent(&stats, 1, 0);
}

#[test]
fn over_long_names_and_ids_are_cut_and_an_empty_name_becomes_unnamed() {
    let server = start_server();
    let long_env = "e".repeat(300);
    let client = builder(&server)
        .environment(long_env.clone())
        .release("r".repeat(256))
        .build()
        .expect("build the client");
    // Multi-byte characters: the cut is by characters, never inside one.
    let long_name: String = "é".repeat(600);
    let long_session: String = "s".repeat(300);
    let long_user: String = "ü".repeat(300);
    let long_model: String = "m".repeat(300);
    let long_span_name: String = "x".repeat(513);

    let trace = client
        .trace(long_name.clone())
        .session_id(long_session.clone())
        .user_id(long_user.clone())
        .start();
    let span = trace.span(long_span_name.clone(), SpanKind::Llm);
    span.set_model(long_model.clone());
    span.set_cost(f64::NAN); // not representable: left out, never null
    span.end();
    trace.span("", SpanKind::Tool).end();
    trace.end();
    client.start_trace("").end();
    let exact = client
        .trace("n".repeat(512))
        .session_id("s".repeat(255))
        .start();
    exact.end();
    client.flush(FLUSH).expect("flush");

    assert_eq!(server.status_count(422), 0, "no request the server rejects");
    assert_eq!(server.status_count(202), 3);
    let requests = requests_to(&server, TRACES_PATH);
    assert_eq!(requests.len(), 3);
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| r.json().expect("the trace body is JSON"))
        .collect();
    for body in &bodies {
        assert_no_null(body, "$");
    }

    let body = &bodies[0];
    let chars = |v: &Value| v.as_str().expect("a string").chars().count();
    assert_eq!(chars(&body["name"]), 512);
    assert_eq!(body["name"], "é".repeat(512));
    assert_eq!(body["session_id"], "s".repeat(255));
    assert_eq!(body["user_id"], "ü".repeat(255));
    assert_eq!(body["environment"], "e".repeat(255));
    assert_eq!(body["release"], "r".repeat(255));
    let spans = body["spans"].as_array().expect("spans");
    assert_eq!(spans[0]["name"], "x".repeat(512));
    assert_eq!(spans[0]["model"], "m".repeat(255));
    assert!(spans[0].get("cost").is_none(), "{}", spans[0]);
    assert_eq!(spans[1]["name"], "unnamed", "an empty span name");
    assert_eq!(bodies[1]["name"], "unnamed", "an empty trace name");
    assert_eq!(
        bodies[2]["name"],
        "n".repeat(512),
        "exactly at the limit: kept whole"
    );
    assert_eq!(bodies[2]["session_id"], "s".repeat(255));
    assert_all_sent(&client.stats(), 3, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Ordering: a trace, then its scores, against a server that stores traces late
// ---------------------------------------------------------------------------------------------

const PAIRS: usize = 1_000;
const PAIR_THREADS: usize = 4;
/// Every this-many traces also get a score through `trace.score(..)` before they end.
const TRACE_SCORE_EVERY: usize = 4;
/// In the paced shape, each thread flushes after this many pairs.
const PAIRS_PER_ROUND: usize = 10;

/// How the 1,000 pairs are produced.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// All at once: the worker has a backlog of traces, and sends traces before scores.
    Burst,
    /// Each thread makes [`PAIRS_PER_ROUND`] pairs, then waits for `flush`: pairs arrive
    /// spread out, as in a service, and each score can go out right behind its trace.
    Paced,
}

struct PairsRun {
    status_500: usize,
    elapsed: Duration,
    stats: Stats,
}

/// 1,000 trace-then-score pairs from several threads against a server that stores a trace
/// 50 ms after its 202 and answers 500 for a score whose trace it has not stored. Asserts
/// that every trace and score is delivered exactly once, each score after its trace.
fn run_pairs(trace_score_delay: Duration, shape: Shape) -> PairsRun {
    let server = TestServer::builder()
        .require_known_traces(true)
        .trace_store_delay(Duration::from_millis(50))
        .start()
        .expect("start the delaying server");
    let client = builder(&server)
        .trace_score_delay(trace_score_delay)
        .max_retries(30)
        .build()
        .expect("build the client");
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..PAIR_THREADS {
            let client = &client;
            s.spawn(move || {
                let mine: Vec<usize> = (t..PAIRS).step_by(PAIR_THREADS).collect();
                let round = match shape {
                    Shape::Burst => mine.len(),
                    Shape::Paced => PAIRS_PER_ROUND,
                };
                for chunk in mine.chunks(round) {
                    for &i in chunk {
                        let trace = client.start_trace(format!("pair-{i}"));
                        let id = trace.trace_id();
                        trace.span("step", SpanKind::Llm).end();
                        if i % TRACE_SCORE_EVERY == 0 {
                            trace
                                .score(Score::boolean(id, "via-trace", true))
                                .expect("score through the trace");
                        }
                        trace.end();
                        client
                            .score(Score::numeric(id, "quality", 0.5))
                            .expect("score after the trace");
                    }
                    if let Shape::Paced = shape {
                        client.flush(FLUSH).expect("flush a round");
                    }
                }
            });
        }
    });
    client.flush(FLUSH).expect("flush delivers every pair");
    let elapsed = start.elapsed();
    let stats = client.stats();
    let scores = (PAIRS + PAIRS / TRACE_SCORE_EVERY) as u64;

    assert_all_sent(&stats, PAIRS as u64, scores);
    assert_eq!(stats.traces.retried, 0);
    assert_eq!(server.trace_count(), PAIRS);
    assert_eq!(
        server.score_count(),
        scores as usize,
        "every score stored once"
    );
    assert_eq!(server.status_count(202), PAIRS);
    assert_eq!(server.status_count(201), scores as usize);
    let status_500 = server.status_count(500);
    assert_eq!(
        stats.scores.retried, status_500 as u64,
        "every retry was a score answered 500"
    );
    assert_eq!(
        stats.requests,
        (PAIRS + scores as usize + status_500) as u64
    );

    // Each score request came after its trace's request.
    let mut trace_at = HashMap::new();
    for (i, r) in server.requests().iter().enumerate() {
        let body = r.json().expect("JSON body");
        let id = body["trace_id"].as_str().expect("trace_id").to_owned();
        if r.path == TRACES_PATH {
            trace_at.entry(id).or_insert(i);
        } else {
            assert_eq!(r.path, SCORES_PATH);
            assert!(
                trace_at.contains_key(&id),
                "score request {i} came before its trace"
            );
        }
    }
    println!(
        "1,000 trace-then-score pairs ({} scores), {shape:?}, trace_score_delay {:?}, server \
         store delay 50 ms: {status_500} responses were 500, {} requests, {:?}",
        scores, trace_score_delay, stats.requests, elapsed
    );
    PairsRun {
        status_500,
        elapsed,
        stats,
    }
}

#[test]
fn trace_then_score_pairs_get_no_500_with_the_grace_period() {
    for shape in [Shape::Paced, Shape::Burst] {
        let run = run_pairs(Duration::from_millis(100), shape);
        assert_eq!(
            run.status_500, 0,
            "{shape:?}: no score reached the server before its trace was stored"
        );
        assert_eq!(run.stats.scores.retried, 0);
        assert!(run.elapsed < FLUSH);
    }
}

#[test]
fn trace_then_score_pairs_without_the_grace_period_need_retries() {
    // Paced, each score goes out right behind its trace: the server has not stored it yet.
    let paced = run_pairs(Duration::ZERO, Shape::Paced);
    assert!(
        paced.status_500 > 0,
        "without the grace period scores reach the server before their trace is stored"
    );
    // In a burst the worker sends the backlog of traces first, which hides the race: the
    // count is only reported.
    let burst = run_pairs(Duration::ZERO, Shape::Burst);
    assert!(burst.elapsed < FLUSH);
}

#[test]
fn held_scores_wait_while_their_trace_is_retried() {
    let server = TestServer::builder()
        .require_known_traces(true)
        .trace_store_delay(Duration::from_millis(50))
        .start()
        .expect("start the delaying server");
    server.fail_next_on(TRACES_PATH, 2, pandaprobe::testing::Fault::Status(500));
    let client = builder(&server)
        .trace_score_delay(Duration::from_millis(100))
        .build()
        .expect("build the client");
    let trace = client.start_trace("retried");
    let id = trace.trace_id();
    trace
        .score(Score::numeric(id, "before-end", 0.1))
        .expect("score through the trace");
    trace.end();
    client
        .score(Score::numeric(id, "after-end", 0.2))
        .expect("score after the trace");
    client.flush(FLUSH).expect("flush");

    assert_eq!(
        server.status_count(500),
        2,
        "only the two injected trace failures"
    );
    assert_eq!(server.score_count(), 2);
    let stats = client.stats();
    assert_all_sent(&stats, 1, 2);
    assert_eq!(stats.traces.retried, 2);
    assert_eq!(stats.scores.retried, 0);
    let paths: Vec<(String, Option<u16>)> = server
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    let t = || (TRACES_PATH.to_owned(), Some(500));
    let ok = || (TRACES_PATH.to_owned(), Some(202));
    let s = || (SCORES_PATH.to_owned(), Some(201));
    assert_eq!(paths, [t(), t(), ok(), s(), s()]);
}

#[test]
fn scores_of_a_rejected_trace_are_tried_and_counted() {
    let server = TestServer::builder()
        .require_known_traces(true)
        .start()
        .expect("start the server");
    server.fail_next_on(TRACES_PATH, 1, pandaprobe::testing::Fault::Status(422));
    let client = builder(&server)
        .max_retries(2)
        .build()
        .expect("build the client");
    let trace = client.start_trace("rejected");
    let id = trace.trace_id();
    trace
        .score(Score::numeric(id, "held", 0.3))
        .expect("score through the trace");
    trace.end();
    client.flush(FLUSH).expect("flush");

    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(stats.traces.dropped.rejected, 1, "{stats:#?}");
    assert_eq!(stats.scores.accepted, 1);
    assert_eq!(stats.scores.sent, 0);
    assert_eq!(stats.scores.dropped.retries_exhausted, 1, "{stats:#?}");
    assert_eq!(stats.scores.pending, 0);
    assert_eq!(server.score_count(), 0);
    assert_eq!(server.status_count(500), 3, "one attempt and two retries");
}

// ---------------------------------------------------------------------------------------------
// 6. Stats count traces apart from scores
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_count_traces_apart_from_scores() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let mut ids = Vec::new();
    for i in 0..3 {
        let trace = client.start_trace(format!("t{i}"));
        ids.push(trace.trace_id());
        trace.span("s", SpanKind::Tool).end();
        trace
            .score(Score::categorical(trace.trace_id(), "verdict", "PASS"))
            .expect("score through the trace");
        trace.end();
    }
    for id in &ids {
        client
            .score(Score::numeric(*id, "quality", 0.9))
            .expect("score");
    }
    client
        .score(Score::boolean(ids[0], "extra", false))
        .expect("score");
    let before = client.stats();
    assert_balanced(&before);
    assert_eq!(before.traces.accepted, 3);
    assert_eq!(before.scores.accepted, 7);
    client.flush(FLUSH).expect("flush");

    let stats = client.stats();
    assert_all_sent(&stats, 3, 7);
    assert_eq!(stats.requests, 10);
    assert_eq!(stats.traces.retried, 0);
    assert_eq!(stats.scores.retried, 0);
    assert_eq!(server.trace_count(), 3);
    assert_eq!(server.score_count(), 7);
    assert_eq!(requests_to(&server, TRACES_PATH).len(), 3);
    assert_eq!(requests_to(&server, SCORES_PATH).len(), 7);
}

// ---------------------------------------------------------------------------------------------
// 7. The global client (process-wide: every global assertion is in this one test)
// ---------------------------------------------------------------------------------------------

#[test]
fn global_start_trace_with_and_without_a_global_client() {
    let server = start_server();

    // No global client: a working trace guard that records nothing.
    assert!(
        pandaprobe::client().is_none(),
        "no other test sets the global client"
    );
    let orphan = pandaprobe::start_trace("no-client");
    let orphan_id = orphan.trace_id();
    assert_eq!(
        orphan_id.get_version_num(),
        4,
        "a fresh v4 UUID: {orphan_id}"
    );
    assert_eq!(
        Uuid::parse_str(&orphan_id.to_string()).ok(),
        Some(orphan_id)
    );
    let span = orphan.span("s", SpanKind::Llm);
    span.set_model("m");
    span.end();
    orphan
        .score(Score::numeric(orphan_id, "q", 0.5))
        .expect("a valid score is fine");
    assert!(
        matches!(
            orphan.score(Score::numeric(orphan_id, "q", 2.0)),
            Err(ScoreError::InvalidNumeric(_))
        ),
        "still validated"
    );
    orphan.end();
    let other = pandaprobe::start_trace("no-client");
    assert_ne!(other.trace_id(), orphan_id, "a fresh id every time");
    drop(other);

    // With a global client.
    let client = builder(&server)
        .environment("global-env")
        .build()
        .expect("build the client");
    let guard = pandaprobe::init(client.clone());
    let trace = pandaprobe::start_trace("global");
    let id = trace.trace_id();
    trace.span("step", SpanKind::Agent).end();
    trace
        .score(Score::numeric(id, "via-trace", 0.25))
        .expect("score through the trace");
    trace.end();
    pandaprobe::score(Score::boolean(id, "via-global", true)).expect("global score");
    let custom = Uuid::new_v4();
    pandaprobe::trace("built")
        .trace_id(custom)
        .user_id("u-1")
        .start()
        .end();
    pandaprobe::flush(FLUSH).expect("global flush");

    assert_eq!(server.trace_count(), 2);
    let traces = server.traces();
    assert_eq!(traces[0].id, id);
    assert_eq!(traces[0].body["name"], "global");
    assert_eq!(traces[0].body["environment"], "global-env");
    assert_eq!(traces[1].id, custom, "the builder's own trace id");
    assert_eq!(traces[1].body["user_id"], "u-1");
    assert_eq!(server.score_count(), 2);
    assert!(server
        .scores()
        .iter()
        .all(|s| s.body["trace_id"] == id.to_string()));
    assert_all_sent(&client.stats(), 2, 2);

    // After the guard is gone, the global functions no longer reach that client.
    drop(guard);
    assert!(pandaprobe::client().is_none());
    let requests = server.request_count();
    let after = pandaprobe::start_trace("after-guard");
    after
        .score(Score::numeric(after.trace_id(), "q", 0.5))
        .expect("score");
    after.end();
    pandaprobe::flush(FLUSH).expect("flush with no global client");
    assert_eq!(server.request_count(), requests, "nothing sent");
    let stats = client.stats();
    assert_all_sent(&stats, 2, 2);
}

// ---------------------------------------------------------------------------------------------
// 8. Scores made through a trace
// ---------------------------------------------------------------------------------------------

#[test]
fn an_invalid_score_through_a_trace_is_refused_at_the_call() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let trace = client.start_trace("invalid-scores");
    let id = trace.trace_id();
    let cases: [(Score, ErrorCheck); 4] = [
        (Score::numeric(id, "q", 1.5), |e| {
            matches!(e, ScoreError::InvalidNumeric(_))
        }),
        (Score::numeric(id, "", 0.5), |e| {
            matches!(e, ScoreError::EmptyName)
        }),
        (
            Score::new(id, "b", "yes").data_type(pandaprobe::ScoreDataType::Boolean),
            |e| matches!(e, ScoreError::InvalidBoolean(_)),
        ),
        (Score::categorical(id, "c", "x").metadata(json!([1])), |e| {
            matches!(e, ScoreError::MetadataNotObject(_))
        }),
    ];
    for (score, expected) in cases {
        let err = trace.score(score).expect_err("an invalid score is refused");
        assert!(expected(&err), "unexpected error: {err:?}");
    }
    // The score's own trace id is replaced by the trace's, even an invalid one.
    trace
        .score(Score::numeric("not-a-uuid", "replaced", 0.5))
        .expect("the trace's id is used");
    let stats = client.stats();
    assert_eq!(
        stats.scores.accepted, 1,
        "refused scores are not counted: {stats:#?}"
    );
    trace.end();
    client.flush(FLUSH).expect("flush");

    assert_eq!(server.score_count(), 1);
    assert_eq!(server.scores()[0].body["trace_id"], id.to_string());
    assert_eq!(server.scores()[0].body["name"], "replaced");
    assert_all_sent(&client.stats(), 1, 1);
}

#[test]
fn scores_through_a_trace_are_accepted_at_once_and_sent_after_the_trace() {
    let server = TestServer::builder()
        .require_known_traces(true)
        .trace_store_delay(Duration::from_millis(20))
        .start()
        .expect("start the delaying server");
    let client = builder(&server)
        .trace_score_delay(Duration::from_millis(50))
        .build()
        .expect("build the client");
    let trace = client.start_trace("held");
    let id = trace.trace_id();
    trace
        .score(Score::numeric(id, "first", 0.1))
        .expect("score through the trace");
    trace
        .score(Score::categorical(id, "second", "PASS").reason("checked"))
        .expect("score through the trace");

    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(stats.scores.accepted, 2, "accepted at the call");
    assert_eq!(stats.scores.pending, 2, "pending while the trace is open");
    assert_eq!(
        stats.traces.accepted, 0,
        "the trace is not queued before it ends"
    );
    // Flush does not wait for scores held by an open trace, and sends nothing for them.
    client
        .flush(Duration::from_secs(5))
        .expect("flush with an open trace");
    assert_eq!(
        server.request_count(),
        0,
        "nothing sent while the trace is open"
    );
    assert_eq!(client.stats().scores.pending, 2);

    trace.end();
    client.flush(FLUSH).expect("flush");
    let stats = client.stats();
    assert_all_sent(&stats, 1, 2);
    assert_eq!(stats.scores.retried, 0);
    assert_eq!(
        server.status_count(500),
        0,
        "no score before its trace was stored"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].path, TRACES_PATH, "the trace goes first");
    assert_eq!(requests[0].status, Some(202));
    let mut names: Vec<String> = requests[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.path, SCORES_PATH);
            assert_eq!(r.status, Some(201));
            let body = r.json().expect("JSON");
            assert_eq!(body["trace_id"], id.to_string());
            body["name"].as_str().expect("name").to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["first", "second"]);
}

#[test]
fn a_trace_ended_after_shutdown_counts_it_and_its_scores_as_dropped() {
    let server = start_server();
    let client = builder(&server).build().expect("build the client");
    let trace = client.start_trace("late");
    trace
        .score(Score::numeric(trace.trace_id(), "q", 0.5))
        .expect("score through the trace");
    trace
        .score(Score::numeric(trace.trace_id(), "r", 0.5))
        .expect("score through the trace");
    client.shutdown(Duration::from_secs(5)).expect("shutdown");
    trace.end();

    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(stats.traces.accepted, 1);
    assert_eq!(stats.traces.dropped.shutdown, 1, "{stats:#?}");
    assert_eq!(stats.scores.accepted, 2);
    assert_eq!(stats.scores.dropped.shutdown, 2, "{stats:#?}");
    assert_eq!(
        server.request_count(),
        0,
        "nothing reaches the server after shutdown"
    );
}
