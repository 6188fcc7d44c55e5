//! Scores after their trace: the server stores a trace a while after answering 202 (first come
//! first served, two at a time, a base time plus a time per span) and answers 500 to a score
//! whose trace is not stored yet. Scores for a trace this client sent wait outside the
//! requests being sent while the worker asks the server whether the trace is stored, go as
//! soon as it says so, whatever the server's speed, and never hold up other records. (A burst
//! of traces with scores: `trace_burst.rs`.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_accounted, client_for, trace_then_three_scores, WAIT};
use pandaprobe::{Score, SpanKind};
use pandaprobe_testing::{
    TestServer, DEFAULT_TRACE_STORE_BASE, DEFAULT_TRACE_STORE_PER_SPAN, SCORES_PATH,
};

/// The real server's storage (the test server's defaults), without its rate limits.
fn storing_server() -> TestServer {
    TestServer::builder()
        .no_rate_limits()
        .start()
        .expect("test server")
}

/// Twelve traces of `sizes` spans, each scored three times right after it ended, on a server
/// that stores at `speed` times the contract's pace: every score is delivered, none is sent
/// before its trace is stored, and the last arrives within a second of the last trace.
fn race(speed: f64, sizes: [usize; 12]) {
    let server = TestServer::builder()
        .trace_store_time(
            DEFAULT_TRACE_STORE_BASE.div_f64(speed),
            DEFAULT_TRACE_STORE_PER_SPAN.div_f64(speed),
        )
        .start()
        .expect("test server");
    let client = client_for(&server).build().expect("client");
    let start = Instant::now();
    let ids: Vec<_> = sizes
        .iter()
        .map(|&spans| trace_then_three_scores(&client, spans))
        .collect();
    client
        .flush(Duration::from_secs(150))
        .expect("all delivered");
    let last_trace = ids
        .iter()
        .filter_map(|id| server.trace_stored_at(*id))
        .max()
        .expect("stored");
    let last_score = server
        .scores()
        .iter()
        .filter_map(|s| s.stored_at)
        .max()
        .expect("scores");
    let score_requests = server
        .requests()
        .iter()
        .filter(|r| r.path == SCORES_PATH)
        .count();
    let stats = client.stats();
    let after = last_score.saturating_duration_since(last_trace);
    eprintln!(
        "{speed}x the contract's storage: last trace stored after {:?}, last score {after:?} \
         later; {score_requests} score requests, {} answered 500, {} readiness probes",
        last_trace.saturating_duration_since(start),
        server.status_count(500),
        stats.probes,
    );
    assert_eq!(server.score_count(), 3 * sizes.len(), "each delivered once");
    assert_eq!(server.status_count(500), 0, "no score before its trace");
    assert_eq!(score_requests, 3 * sizes.len(), "no score request wasted");
    assert!(after <= Duration::from_secs(1), "{after:?}");
    assert_accounted(&stats);
}

const SIZES: [usize; 12] = [0, 500, 0, 250, 0, 100, 0, 400, 0, 50, 0, 300];

#[test]
fn twelve_traces_scored_at_once_go_within_a_second_of_the_last_stored() {
    race(1.0, SIZES);
}

#[test]
fn on_a_server_ten_times_faster_too() {
    race(10.0, SIZES);
}

#[test]
fn on_a_server_ten_times_slower_too() {
    // A tenth of the spans, so that the run takes as long as the contract's pace with all
    // of them (about 10 s, not 100).
    race(0.1, SIZES.map(|n| n / 10));
}

#[test]
fn shutdown_delivers_scores_of_a_trace_stored_before_its_deadline() {
    let server = TestServer::builder()
        .no_rate_limits()
        .trace_store_time(Duration::from_millis(20), Duration::from_millis(1))
        .start()
        .expect("test server");
    let client = client_for(&server).build().expect("client");
    trace_then_three_scores(&client, 500);
    let result = client.shutdown(Duration::from_secs(5));
    assert_eq!(result, Ok(()), "{}", client.stats());
    assert_eq!(server.score_count(), 3);
    assert_eq!(server.status_count(500), 0, "the trace was stored by then");
    assert_accounted(&client.stats());
}

#[test]
fn flush_returns_soon_after_a_small_trace_is_stored() {
    let server = storing_server();
    let client = client_for(&server).build().expect("client");
    let mut after = Vec::new();
    for _ in 0..5 {
        let id = trace_then_three_scores(&client, 1);
        client.flush(WAIT).expect("delivered");
        let flushed = Instant::now();
        let stored = server.trace_stored_at(id).expect("stored");
        after.push(flushed.saturating_duration_since(stored));
    }
    after.sort();
    eprintln!("flush returned after the trace was stored: {after:?}");
    assert_eq!(
        server.status_count(500),
        0,
        "no score went before its trace"
    );
    // The design goal is one probe interval (20-100 ms) and a round trip after storage; the
    // test allows a loaded machine a second.
    assert!(after[2] < Duration::from_secs(1), "{after:?}");
}

#[test]
fn scores_made_on_the_open_trace_and_after_it_wait_together() {
    let server = storing_server();
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("agent");
    let id = trace.trace_id();
    trace
        .score(Score::categorical(id, "verdict", "PASS"))
        .expect("held");
    trace.span("llm", SpanKind::Llm).end();
    trace.end();
    client
        .score(Score::boolean(id, "grounded", true))
        .expect("queued");
    client.flush(WAIT).expect("delivered");
    assert_eq!(server.score_count(), 2);
    assert_eq!(server.status_count(500), 0);
}

#[test]
fn held_scores_never_hold_up_scores_of_other_traces() {
    let server = Arc::new(storing_server());
    // A trace stored long ago (by another service, say).
    let other = client_for(&server).build().expect("client");
    let stored_id = other.start_trace("earlier").trace_id();
    other.flush(WAIT).expect("sent");
    assert!(server.wait_for_stored_traces(1, WAIT));
    // A trace that takes seconds to store, with its scores, then scores for the stored one.
    let client = client_for(&server).build().expect("client");
    let slow = trace_then_three_scores(&client, 300);
    for i in 0..50 {
        client
            .score(Score::numeric(stored_id, format!("s{i}"), 0.1))
            .expect("queued");
    }
    assert!(
        server.wait_for_scores(50, WAIT),
        "not held up by the slow trace"
    );
    assert!(
        server.trace_stored_at(slow).is_none(),
        "the slow trace is still being stored"
    );
    client
        .flush(Duration::from_secs(30))
        .expect("all delivered");
    assert_eq!(server.score_count(), 53);
    assert_eq!(server.status_count(500), 0);
}

#[test]
fn client_scores_for_a_trace_still_open_wait_for_it_without_holding_up_a_flush() {
    let server = storing_server();
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("request");
    let id = trace.trace_id();
    // The handler scores the trace of the request it is in, by id, while the trace is open.
    client
        .score(Score::numeric(id, "relevance", 0.7))
        .expect("queued");
    client
        .flush(WAIT)
        .expect("a flush does not wait for a trace still open");
    assert_eq!(server.request_count(), 0, "nothing went before its trace");
    trace.end();
    client.flush(WAIT).expect("now both are delivered");
    assert_eq!((server.trace_count(), server.score_count()), (1, 1));
    assert_eq!(server.status_count(500), 0);
}

#[test]
fn a_flush_that_times_out_says_the_scores_wait_for_their_trace() {
    // A trace the server accepts and never stores: its scores wait for it.
    let server = storing_server();
    server.fail_next_on(
        pandaprobe_testing::TRACES_PATH,
        1,
        pandaprobe_testing::Fault::Raw {
            status: 202,
            headers: vec![],
            body: r#"{"trace_id":"x","task_id":"y"}"#.into(),
        },
    );
    let client = client_for(&server).build().expect("client");
    trace_then_three_scores(&client, 0);
    let flushed = client.flush(Duration::from_secs(1));
    let Err(pandaprobe::FlushError::Timeout {
        pending, waiting, ..
    }) = flushed
    else {
        panic!("{flushed:?}");
    };
    assert_eq!(pending, 3);
    assert_eq!(waiting.for_trace, 3, "{waiting:?}");
    let message = flushed.expect_err("timed out").to_string();
    assert!(
        message.contains("3 waiting for their trace to be stored"),
        "{message}"
    );
    let _ = client.shutdown(Duration::from_millis(100));
}
