//! Traces and spans on the wire and in the hands of their users: the exact body (every field,
//! key order, no nulls, timestamps), spans that end with their trace, a trace ended by dropping
//! its last handle (also after its client handle, also during a panic), handles shared and
//! ended across threads and tasks (once), the server's limits (500 spans, field lengths, no
//! empty names), and traces counted apart from scores.
//!
//! The server is lenient (traces stored at once): how scores wait for their trace to be stored
//! is in `trace_storage.rs`.

mod common;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use common::{assert_accounted, assert_all_sent, client_for, lenient_server, WAIT};
use pandaprobe::{Client, Score, SpanKind, SpanStatus, Stats, Trace, TraceStatus, Uuid};
use pandaprobe_testing::{ReceivedRequest, TestServer, SCORES_PATH, TRACES_PATH};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};

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

/// A trace with one span and nothing optional set: only the required keys, in order.
#[track_caller]
fn assert_only_required_keys(raw: &[u8]) {
    let (top, spans) = raw_key_order(raw);
    let span = [
        "span_id",
        "name",
        "kind",
        "status",
        "started_at",
        "ended_at",
    ];
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
    assert_eq!(spans, [span]);
}

/// `keys` appear in the same relative order as in `contract`, and every one is in it.
#[track_caller]
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

#[track_caller]
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
#[track_caller]
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

#[track_caller]
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

/// `traces` traces and `scores` scores accepted, all sent, nothing else.
#[track_caller]
fn assert_sent(stats: &Stats, traces: u64, scores: u64) {
    assert_accounted(stats);
    assert_all_sent(&stats.traces, traces);
    assert_all_sent(&stats.scores, scores);
}

// ---------------------------------------------------------------------------------------------
// The exact body
// ---------------------------------------------------------------------------------------------

#[test]
fn a_trace_with_nested_spans_and_every_field_has_the_exact_body() {
    let server = lenient_server();
    let client = client_for(&server)
        .environment("prod")
        .release("1.2.3")
        .build()
        .expect("client");
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
    let misc = trace.span_with_parent(Some(chain_id), "misc", SpanKind::Other);
    let misc_id = misc.span_id();
    misc.end();

    trace.set_output(json!({"messages": [{"role": "assistant", "content": "hello"}]}));
    trace.set_status(TraceStatus::Error);
    trace.end();
    client.flush(WAIT).expect("flush");
    let after = now_stamp();

    let (raw, mut body) = only_trace_request(&server);
    let traces = server.traces();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].id, trace_id, "stored under the trace's id");
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
                "parent_span_id": chain_id.to_string(),
                "name": "misc",
                "kind": "OTHER",
                "status": "UNSET",
            },
        ],
    });
    assert_eq!(body, expected);

    let stats = client.stats();
    assert_sent(&stats, 1, 0);
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.spans_dropped, 0);
}

#[test]
fn a_minimal_trace_omits_every_absent_key() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("bare");
    trace.span("step", SpanKind::default()).end();
    trace.end();
    client.flush(WAIT).expect("flush");

    let (raw, body) = only_trace_request(&server);
    assert_no_null(&body, "$");
    assert_only_required_keys(&raw);
    assert_eq!(body["status"], "COMPLETED", "the default status");
    assert_eq!(body["spans"][0]["kind"], "OTHER", "the default kind");
    assert_eq!(
        body["spans"][0]["status"], "UNSET",
        "the default span status"
    );

    // No spans at all: no `spans` key.
    server.reset_records();
    client.start_trace("no-spans").end();
    client.flush(WAIT).expect("flush");
    let (raw, _) = only_trace_request(&server);
    assert_eq!(
        raw_key_order(&raw).0,
        ["trace_id", "name", "status", "started_at", "ended_at"]
    );
    assert_sent(&client.stats(), 2, 0);
}

/// "Keys omitted when absent, never null": a `Value::Null` handed to a setter means "not set",
/// not `"input":null` or `{"value":null}`.
#[test]
fn null_json_values_are_left_out_of_the_body() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let trace = client
        .trace("nulls")
        .input(Value::Null)
        .metadata(Value::Null)
        .start();
    trace.set_output(Value::Null);
    trace.set_metadata(Value::Null);
    trace.set_input(Value::Null);
    let span = trace.span("s", SpanKind::Llm);
    span.set_input(Value::Null);
    span.set_output(Value::Null);
    span.set_metadata(Value::Null);
    span.set_model_parameters(Value::Null);
    span.end();
    trace.end();
    client.flush(WAIT).expect("flush");
    let (raw, body) = only_trace_request(&server);
    assert_no_null(&body, "$");
    assert_only_required_keys(&raw);
}

#[test]
fn metadata_merges_key_by_key_and_a_cost_breakdown_keeps_its_total() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let trace = client
        .trace("merged")
        .metadata(json!({"a": 1, "b": 1}))
        .start();
    trace.merge_metadata(json!({"b": 2, "c": 3}));
    let span = trace.span("llm", SpanKind::Llm);
    span.merge_metadata(json!({"first": true})); // nothing to merge into yet
    span.merge_metadata(json!({"second": true}));
    span.merge_metadata(Value::Null); // nothing
    span.set_cost_breakdown(
        0.003,
        [("input", 0.001), ("output", 0.002), ("bad", f64::NAN)],
    );
    let first_token = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    span.set_completion_start_at(first_token);
    let free = trace.span("free", SpanKind::Tool);
    free.set_cost_breakdown(f64::INFINITY, [("input", 0.5)]); // no total: no cost at all
    drop((span, free));
    trace.end();
    client.flush(WAIT).expect("flush");
    let (_, body) = only_trace_request(&server);
    assert_eq!(body["metadata"], json!({"a": 1, "b": 2, "c": 3}));
    let llm = &body["spans"][0];
    assert_eq!(llm["metadata"], json!({"first": true, "second": true}));
    assert_eq!(
        llm["cost"],
        json!({"input": 0.001, "output": 0.002, "total": 0.003})
    );
    assert!(
        llm["completion_start_time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2027-01-15T08:00:00")),
        "{llm:#}"
    );
    assert!(body["spans"][1].get("cost").is_none());
}

// ---------------------------------------------------------------------------------------------
// Open spans, dropped handles
// ---------------------------------------------------------------------------------------------

#[test]
fn a_span_still_open_when_its_trace_ends_ends_with_it() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("open-span");
    trace.span("closed", SpanKind::Tool).end();
    let open = trace.span("open", SpanKind::Llm);
    let open_child = open.span("open-child", SpanKind::Tool);
    open.set_model("before-end");
    trace.end();

    // The handles outlive the trace: setting, opening and dropping them now changes nothing.
    open.set_model("after-end");
    open.set_error("after-end");
    drop(open.span("opened-after-end", SpanKind::Other));
    drop(open_child);
    drop(open);
    client.flush(WAIT).expect("flush");

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
    assert_sent(&stats, 1, 0);
    assert_eq!(
        stats.spans_dropped, 0,
        "a span opened after the end is not a dropped span"
    );
}

#[test]
fn a_trace_dropped_without_end_still_arrives_with_its_spans() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
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
        drop(trace); // the handle goes first, the span after it
        drop(open);
    }
    client.flush(WAIT).expect("flush");

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
    assert_sent(&client.stats(), 1, 0);
}

/// A trace whose last handle is dropped while its thread panics is sent, marked as failed.
#[test]
fn a_trace_dropped_during_a_panic_is_sent_as_an_error() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("panics");
    let trace_id = trace.trace_id();
    let panicked = std::thread::spawn(move || {
        // Unwinding drops the open span, then the trace's last handle.
        let _span = trace.span("doomed", SpanKind::Tool);
        panic!("the agent failed (a panic this test expects)");
    })
    .join();
    assert!(panicked.is_err(), "the thread panicked");
    client.flush(WAIT).expect("flush");
    let (_, body) = only_trace_request(&server);
    assert_eq!(assert_uuid(&body["trace_id"], "trace_id"), trace_id);
    assert_eq!(body["status"], "ERROR");
    assert_eq!(body["spans"][0]["status"], "ERROR", "{body}");
    assert_sent(&client.stats(), 1, 0);
}

#[test]
fn only_client_handles_keep_the_worker_a_trace_ended_after_them_is_counted_shut_down() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let ended = client.start_trace("ended-in-time");
    let late = client.start_trace("outlives");
    late.score(Score::boolean(late.trace_id(), "ok", true))
        .expect("score through the trace");
    ended.end();
    let stats = client.clone();
    drop(client);
    drop(stats); // the last handle: its shutdown delivers what is queued
    assert_eq!(
        server.trace_count(),
        1,
        "the ended trace, delivered by the shutdown"
    );
    assert_eq!(server.traces()[0].id, ended.trace_id());
    drop(ended);
    late.end(); // refused: the worker is gone, and the trace does not keep it
    assert_eq!(server.trace_count(), 1);
    assert_eq!(server.score_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Threads and tasks
// ---------------------------------------------------------------------------------------------

#[test]
fn traces_and_spans_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Trace>();
    assert_send_sync::<pandaprobe::Span>();
    assert_send_sync::<pandaprobe::TraceBuilder>();
    assert_send_sync::<Client>();
}

/// A clone moved into a thread and ended there ends the trace for every handle: it is sent
/// once, and what the other handles do afterwards changes nothing.
#[test]
fn a_trace_clone_ended_on_another_thread_ends_it_once() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("moved");
    let trace_id = trace.trace_id();
    let clone = trace.clone();
    std::thread::spawn(move || {
        let span = clone.span("on-thread", SpanKind::Tool);
        span.span("child", SpanKind::Llm).end();
        span.end();
        clone.end();
    })
    .join()
    .expect("the thread did not panic");
    // Ended: later calls through the other handle do nothing.
    trace.span("after-end", SpanKind::Other).end();
    trace.set_output(json!("too late"));
    trace.add_tag("too-late");
    trace.end();
    drop(trace);
    client.flush(WAIT).expect("flush");

    let (_, body) = only_trace_request(&server);
    assert_eq!(assert_uuid(&body["trace_id"], "trace_id"), trace_id);
    let spans = body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert!(
        body.get("output").is_none() && body.get("tags").is_none(),
        "{body}"
    );
    assert_sent(&client.stats(), 1, 0);
}

#[test]
fn spans_come_from_many_threads_into_one_trace() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 25;
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let shared = client.start_trace("shared");
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let trace = shared.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let span = trace.span(format!("t{t}-s{i}"), SpanKind::Chain);
                    span.span(format!("t{t}-s{i}-child"), SpanKind::Other).end();
                    span.end();
                }
            });
        }
    });
    shared.end();
    client.flush(WAIT).expect("flush");

    let (_, body) = only_trace_request(&server);
    let spans = body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2 * THREADS * PER_THREAD);
    let by_name: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["name"].as_str().expect("name"), &s["span_id"]))
        .collect();
    assert_eq!(by_name.len(), spans.len(), "every span name once");
    for span in spans {
        let name = span["name"].as_str().expect("name");
        if let Some(parent) = name.strip_suffix("-child") {
            assert_eq!(&span["parent_span_id"], by_name[parent], "{name}");
        } else {
            assert!(span.get("parent_span_id").is_none(), "{name}");
        }
        assert_timestamp(&span["ended_at"], "ended_at");
    }
    assert_sent(&client.stats(), 1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_clone_crosses_await_points_in_tokio_tasks() {
    fn assert_send<T: Send>(_: &T) {}
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let trace = client
        .trace("async-agent")
        .session_id("async-session")
        .start();
    let trace_id = trace.trace_id();

    let handle = trace.clone();
    let task = async move {
        let span = handle.span("llm-call", SpanKind::Llm);
        tokio::task::yield_now().await;
        span.set_model("gpt-x");
        // A real suspension: the task may resume on the other worker thread.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let tool = span.span("tool", SpanKind::Tool);
        tokio::task::yield_now().await;
        tool.end();
        span.set_token_usage(1, 2);
        span.end();
        tokio::task::yield_now().await;
        handle.end();
    };
    assert_send(&task);
    tokio::spawn(task).await.expect("the task did not panic");
    trace.end(); // already ended in the task: nothing more

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
    client.flush_async(WAIT).await.expect("flush");

    let traces = server.traces();
    assert_eq!(traces.len(), 21);
    assert_eq!(
        requests_to(&server, TRACES_PATH).len(),
        21,
        "each trace sent once"
    );
    let first = traces
        .into_iter()
        .find(|t| t.id == trace_id)
        .expect("the async trace");
    let spans = first.body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["model"], "gpt-x");
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert_eq!(first.body["session_id"], "async-session");
    assert_sent(&client.stats(), 21, 0);
}

// ---------------------------------------------------------------------------------------------
// The server's limits
// ---------------------------------------------------------------------------------------------

#[test]
fn a_trace_of_1800_spans_arrives_whole_with_its_scores() {
    // The contract's storage and rate limits: 500 spans go with the trace, the rest in
    // requests of at most 500 once the server says it is stored.
    let server = TestServer::builder()
        .trace_store_time(Duration::from_millis(20), Duration::from_millis(2))
        .span_write_time(Duration::from_micros(200))
        .start()
        .expect("test server");
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("long-agent");
    let id = trace.trace_id();
    let root = trace.span("root", SpanKind::Agent);
    let mut parents = HashMap::new();
    parents.insert(root.span_id(), None);
    for name in ["plan", "review"] {
        let span = root.span(name, SpanKind::Llm);
        parents.insert(span.span_id(), Some(root.span_id()));
        span.end();
    }
    // Each step's children nest under it, so parents sit in other requests than their spans.
    for step in 0..599 {
        let call = root.span(format!("step {step}"), SpanKind::Chain);
        parents.insert(call.span_id(), Some(root.span_id()));
        for tool in ["search", "read"] {
            let child = call.span(tool, SpanKind::Tool);
            parents.insert(child.span_id(), Some(call.span_id()));
            child.end();
        }
        call.end();
    }
    root.end();
    assert_eq!(parents.len(), 1800);
    trace.end();
    for name in ["relevance", "helpfulness", "safety"] {
        client.score(Score::numeric(id, name, 0.5)).expect("queued");
    }
    client.flush(Duration::from_secs(60)).expect("flush");

    let stored = server.stored_trace(id).expect("stored");
    let spans = stored["spans"].as_array().expect("spans");
    let mut seen = HashMap::new();
    for span in spans {
        let span_id = assert_uuid(&span["span_id"], "span_id");
        let parent = span["parent_span_id"]
            .as_str()
            .map(|p| p.parse().expect("uuid"));
        assert!(seen.insert(span_id, parent).is_none(), "{span_id} twice");
    }
    assert_eq!(seen, parents, "every span once, with its parent");
    assert_eq!(server.score_count(), 3);
    assert_eq!(server.status_count(500), 0, "no score before its trace");
    let stats = client.stats();
    assert_eq!(stats.spans_added, 1300);
    assert_eq!(stats.spans_dropped, 0);
    assert_sent(&stats, 1, 3);
    assert_eq!(server.status_count(422), 0, "the server rejected nothing");
}

#[test]
fn over_long_names_and_ids_are_cut_and_an_empty_name_becomes_unnamed() {
    let server = lenient_server();
    let client = client_for(&server)
        .environment("e".repeat(300))
        .release("r".repeat(256))
        .build()
        .expect("client");
    // Multi-byte characters: the cut is by characters, never inside one.
    let trace = client
        .trace("é".repeat(600))
        .session_id("s".repeat(300))
        .user_id("ü".repeat(300))
        .start();
    let span = trace.span("x".repeat(513), SpanKind::Llm);
    span.set_model("m".repeat(300));
    span.set_cost(f64::NAN); // not representable: left out, never null
    span.end();
    trace.span("", SpanKind::Tool).end();
    trace.end();
    client.start_trace("").end();
    client
        .trace("n".repeat(512))
        .session_id("s".repeat(255))
        .start()
        .end();
    client.flush(WAIT).expect("flush");

    assert_eq!(server.status_count(422), 0, "no request the server rejects");
    assert_eq!(server.status_count(202), 3);
    let bodies: Vec<Value> = requests_to(&server, TRACES_PATH)
        .iter()
        .map(|r| r.json().expect("the trace body is JSON"))
        .collect();
    assert_eq!(bodies.len(), 3);
    for body in &bodies {
        assert_no_null(body, "$");
    }
    let body = &bodies[0];
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
    assert_sent(&client.stats(), 3, 0);
}

// ---------------------------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_count_traces_apart_from_scores() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
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
    assert!(
        before.scores.is_balanced() && before.traces.is_balanced(),
        "{before}"
    );
    assert_eq!(
        (before.traces.accepted, before.scores.accepted),
        (3, 7),
        "{before}"
    );
    client.flush(WAIT).expect("flush");

    let stats = client.stats();
    assert_sent(&stats, 3, 7);
    assert_eq!(
        (stats.traces.retried, stats.scores.retried),
        (0, 0),
        "{stats}"
    );
    assert_eq!(stats.requests, 10);
    assert_eq!(server.trace_count(), 3);
    assert_eq!(server.score_count(), 7);
    assert_eq!(requests_to(&server, TRACES_PATH).len(), 3);
    assert_eq!(requests_to(&server, SCORES_PATH).len(), 7);
    let line = stats.to_string();
    assert!(line.contains("traces: accepted 3, sent 3"), "{line}");
    assert!(line.contains("scores: accepted 7, sent 7"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// In-memory capture
// ---------------------------------------------------------------------------------------------

#[test]
fn a_capturing_client_keeps_what_it_would_send_and_sends_nothing() {
    let capture = pandaprobe::Capture::new();
    // A port nothing listens on: a request that went out would fail, and be retried.
    let client = Client::builder()
        .endpoint("http://127.0.0.1:9")
        .capture(&capture)
        .build()
        .expect("no key or project needed");
    let trace = client.start_trace("captured-agent");
    let id = trace.trace_id();
    for i in 0..1200 {
        trace.span(format!("step {i}"), SpanKind::Tool).end();
    }
    trace
        .score(Score::numeric(id, "relevance", 0.9))
        .expect("held");
    trace.end();
    client
        .score(Score::categorical(id, "verdict", "PASS"))
        .expect("queued");
    client.flush(WAIT).expect("answered in memory");

    let sent = capture.trace(id).expect("captured");
    assert_eq!(sent["name"], "captured-agent");
    assert_eq!(
        sent["spans"].as_array().map(Vec::len),
        Some(1200),
        "all of them"
    );
    let names: Vec<Value> = capture.scores().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&json!("relevance")) && names.contains(&json!("verdict")));
    let stats = client.stats();
    assert_sent(&stats, 1, 2);
    assert_eq!(stats.spans_added, 700);
    assert_eq!(capture.traces().len(), 1);
    capture.clear();
    assert!(capture.scores().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Client::span: where an integration's span goes
// ---------------------------------------------------------------------------------------------

/// Inside an entered trace (or `in_scope`), `Client::span` joins it; outside any, it opens a
/// trace of its own, named after the span, that ends with it and takes its error status.
#[test]
fn client_span_joins_the_current_trace_or_opens_one_that_ends_with_it() {
    let capture = pandaprobe::Capture::new();
    let client = Client::builder().capture(&capture).build().expect("client");

    let agent = client.start_trace("agent");
    {
        let _entered = agent.enter();
        let llm = client.span("chat gpt-x", SpanKind::Llm);
        assert_eq!(llm.trace_id(), agent.trace_id());
        llm.set_model("gpt-x");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(agent.in_scope(async {
        tokio::task::yield_now().await;
        client.span("embed", SpanKind::Embedding).end();
    }));
    agent.end();

    let alone = client.span("chat alone", SpanKind::Llm);
    let alone_trace = alone.trace_id();
    assert_ne!(alone_trace, agent.trace_id());
    alone.set_error("the provider answered 500");
    drop(alone); // ends its trace too: nothing else holds it
    client.flush(WAIT).expect("captured");

    let sent = capture.trace(agent.trace_id()).expect("the agent's trace");
    let names: Vec<&str> = sent["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["chat gpt-x", "embed"]);
    let own = capture
        .trace(alone_trace)
        .expect("a trace of its own, ended");
    assert_eq!(own["name"], "chat alone");
    assert_eq!(own["status"], "ERROR");
    assert_eq!(own["spans"][0]["error"], "the provider answered 500");
}

/// An entered span (or one `in_scope`) is where `Client::span` opens its span: under it, in
/// its trace; leaving it makes the entered trace current again.
#[test]
fn client_span_goes_under_an_entered_span_and_back_to_the_trace_after_it() {
    let capture = pandaprobe::Capture::new();
    let client = Client::builder().capture(&capture).build().expect("client");
    let agent = client.start_trace("agent");
    let _in_trace = agent.enter();
    let plan = agent.span("plan", SpanKind::Agent);
    {
        let _in_plan = plan.enter();
        assert_eq!(pandaprobe::current_trace_id(), Some(agent.trace_id()));
        client.span("chat planner", SpanKind::Llm).end();
    }
    let act = agent.span("act", SpanKind::Agent);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let in_task = client.clone();
    let scoped = act.in_scope(async move {
        tokio::task::yield_now().await; // resumed on either worker thread
        in_task.span("chat actor", SpanKind::Llm).end();
    });
    assert_eq!(scoped.trace_id(), agent.trace_id());
    runtime
        .block_on(async { tokio::spawn(scoped).await })
        .expect("no panic");
    client.span("summary", SpanKind::Llm).end(); // back at the trace's top
    drop((plan, act));
    drop(_in_trace);
    agent.end();
    client.flush(WAIT).expect("captured");

    let sent = capture.trace(agent.trace_id()).expect("the agent's trace");
    let spans = sent["spans"].as_array().expect("spans");
    let id_of = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| (s["span_id"].clone(), s.get("parent_span_id").cloned()))
            .expect(name)
    };
    let (plan_id, _) = id_of("plan");
    let (act_id, _) = id_of("act");
    assert_eq!(id_of("chat planner").1, Some(plan_id));
    assert_eq!(id_of("chat actor").1, Some(act_id));
    assert_eq!(id_of("summary").1, None, "at the top of the trace");
}

/// Guards dropped out of order leave a wrong trace current for a while, never an open one:
/// the thread-local holds no handle that keeps a trace from ending with its last one.
#[test]
fn an_entered_trace_ends_with_its_last_handle_even_if_guards_are_dropped_out_of_order() {
    let capture = pandaprobe::Capture::new();
    let client = Client::builder().capture(&capture).build().expect("client");
    let outer = client.start_trace("outer");
    let inner = client.start_trace("inner");
    let outer_guard = outer.enter();
    let inner_guard = inner.enter();
    drop(outer_guard);
    drop(inner_guard); // restores "outer" as current: the wrong order
    let outer_id = outer.trace_id();
    assert_eq!(pandaprobe::current_trace_id(), Some(outer_id));
    drop(outer);
    drop(inner);
    client.flush(WAIT).expect("captured");
    assert!(capture.trace(outer_id).is_some(), "ended and sent");
    // The ended trace is no parent for new spans: this one opens a trace of its own.
    let span = client.span("after", SpanKind::Llm);
    assert_ne!(span.trace_id(), outer_id);
}
