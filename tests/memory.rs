//! LLM-sized records: the byte budget bounds what the SDK holds, records over the size limit are
//! cut visibly, flush and shutdown keep their deadlines with megabytes queued, and a client
//! made before `fork()` refuses at once in the child.

mod common;

use std::time::{Duration, Instant};

use common::{assert_accounted, client_for, hanging_server, lenient_server, parked};
use pandaprobe::{FlushError, Score, ScoreDataType, ScoreError, Uuid};
use serde_json::json;

const MIB: usize = 1024 * 1024;

fn big_score(trace_id: Uuid, i: usize, bytes: usize) -> Score {
    Score::new(trace_id, format!("judge-{i}"), "ok")
        .data_type(ScoreDataType::Categorical)
        .reason("r".repeat(bytes))
}

#[test]
fn a_record_that_does_not_fit_the_byte_budget_is_refused_at_the_call_and_counted() {
    let server = hanging_server();
    let client = parked(client_for(&server))
        .max_queue_bytes(10 * MIB)
        .max_record_bytes(4 * MIB)
        .build()
        .unwrap();
    let trace_id = Uuid::new_v4();
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..40 {
        match client.score(big_score(trace_id, i, MIB)) {
            Ok(()) => accepted += 1,
            Err(ScoreError::QueueBytesFull {
                record_bytes,
                max_queue_bytes,
            }) => {
                assert!(record_bytes > MIB, "{record_bytes}");
                assert_eq!(max_queue_bytes, 10 * MIB);
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // 10 MiB hold nine records of a little over 1 MiB, whatever the count limit says.
    assert_eq!(accepted, 9, "accepted {accepted}, refused {refused}");
    let stats = client.stats();
    assert_eq!(stats.scores.dropped.queue_bytes_full, 31);
    assert!(stats.scores.is_balanced(), "{}", stats.scores);
    // Small records still fit beside them.
    client
        .score(Score::numeric(trace_id, "small", 0.5))
        .expect("a small score fits");
    let _ = client.shutdown(Duration::from_millis(200));
    assert_accounted(&client.stats());
}

#[test]
fn the_budget_is_given_back_when_records_are_delivered() {
    let server = lenient_server();
    let client = client_for(&server)
        .max_queue_bytes(3 * MIB)
        .max_record_bytes(4 * MIB)
        .build()
        .unwrap();
    let trace_id = Uuid::new_v4();
    // Forty records of 1 MiB through a budget of three: each fits once the earlier are sent.
    for i in 0..40 {
        client
            .score(big_score(trace_id, i, MIB))
            .unwrap_or_else(|e| panic!("score {i}: {e}"));
        if i % 2 == 1 {
            client.flush(Duration::from_secs(30)).expect("flush");
        }
    }
    client.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(server.score_count(), 40);
    assert_accounted(&client.stats());
}

#[test]
fn a_score_over_the_record_limit_arrives_with_a_marker_naming_the_cut_field() {
    let server = lenient_server();
    let client = client_for(&server).build().unwrap();
    let trace_id = Uuid::new_v4();
    client
        .score(
            Score::categorical(trace_id, "verdict", "PASS")
                .reason("short reason")
                .metadata(json!({"context": "c".repeat(3 * MIB)})),
        )
        .expect("a big score is cut, not refused");
    client.flush(Duration::from_secs(30)).expect("flush");
    let stored = server.scores();
    assert_eq!(stored.len(), 1);
    let body = &stored[0].body;
    assert_eq!(body["reason"], "short reason", "the small field is kept");
    let marker = body["metadata"]["pandaprobe_cut"].as_str().expect("marker");
    assert!(marker.contains("metadata was"), "{marker}");
    assert!(marker.contains("max_record_bytes is 1000000"), "{marker}");
    assert_eq!(client.stats().fields_cut, 1);
}

#[test]
fn a_trace_with_a_huge_tool_output_keeps_every_span_and_marks_the_cut_one() {
    let server = lenient_server();
    let client = client_for(&server).build().unwrap();
    let trace = client.start_trace("agent");
    let small = trace.span("plan", pandaprobe::SpanKind::Llm);
    small.set_input(json!({"messages": [{"role": "user", "content": "hi"}]}));
    small.end();
    let tool = trace.span("fetch", pandaprobe::SpanKind::Tool);
    tool.set_output(json!("o".repeat(2 * MIB)));
    tool.end();
    let id = trace.trace_id();
    trace.end();
    client.flush(Duration::from_secs(30)).expect("flush");
    let traces = server.traces();
    let body = &traces.iter().find(|t| t.id == id).expect("stored").body;
    let spans = body["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    let fetch = spans.iter().find(|s| s["name"] == "fetch").unwrap();
    let output = fetch["output"].as_str().unwrap();
    assert!(
        output.starts_with("[cut by pandaprobe: output was"),
        "{output}"
    );
    let plan = spans.iter().find(|s| s["name"] == "plan").unwrap();
    assert_eq!(plan["input"]["messages"][0]["content"], "hi");
    assert_eq!(client.stats().fields_cut, 1);
}

#[test]
fn flush_and_shutdown_keep_their_deadlines_with_megabytes_queued_into_a_hanging_server() {
    let server = hanging_server();
    let client = client_for(&server)
        .max_record_bytes(4 * MIB)
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let trace_id = Uuid::new_v4();
    for i in 0..200 {
        // Past the default budget (128 MiB) the rest are refused: what is held stays bounded.
        let _ = client.score(big_score(trace_id, i, 2 * MIB));
    }
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let flushed = client.flush(timeout);
    assert!(
        matches!(flushed, Err(FlushError::Timeout { .. })),
        "{flushed:?}"
    );
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
    let started = Instant::now();
    let _ = client.shutdown(timeout);
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
    // When shutdown returns every record has its outcome, and nothing more is sent.
    let stats = client.stats();
    assert_accounted(&stats);
    assert!(
        stats.scores.dropped.queue_bytes_full > 0,
        "{}",
        stats.scores
    );
    let requests = stats.requests;
    drop(client);
    assert!(server.request_count() as u64 <= requests);
}

#[cfg(unix)]
#[test]
fn a_client_made_before_fork_refuses_in_the_child_at_once() {
    let server = lenient_server();
    let client = client_for(&server).build().unwrap();
    let trace_id = Uuid::new_v4();
    client
        .score(Score::numeric(trace_id, "parent", 0.5))
        .unwrap();
    // SAFETY: the child only calls the client (atomics and plain allocation) and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let scored = client.score(Score::numeric(trace_id, "child", 0.5));
        let started = Instant::now();
        let flushed = client.flush(Duration::from_secs(30));
        let shut = client.shutdown(Duration::from_secs(30));
        let fast = started.elapsed() < Duration::from_secs(5);
        let ok = matches!(scored, Err(ScoreError::Forked))
            && matches!(flushed, Err(FlushError::Forked))
            && matches!(shut, Err(FlushError::Forked))
            && client.stats().scores.dropped.forked == 1
            && fast;
        std::mem::forget(client);
        // SAFETY: leaves the child at once, running no destructor or atexit handler.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child made above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child did not exit: {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child saw the wrong outcomes"
    );
    // The parent goes on as before.
    client
        .score(Score::numeric(trace_id, "after", 0.5))
        .unwrap();
    client.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(server.score_count(), 2);
    assert_eq!(client.stats().scores.dropped.forked, 0);
}
