//! No silent loss: what the server could not store is fixed before it is sent (NUL characters
//! in traces), every record that is dropped reaches the drop hook once with what is known of
//! it, is logged where people look, and is counted under a reason that tells "lost" from
//! "maybe delivered".

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{
    assert_accounted, client_for, faithful_server, lenient_server, logs, wait_until, Drops, WAIT,
};
use pandaprobe::{
    Client, DropReason, FlushError, QueueFullPolicy, RecordKind, Score, ScoreError, SpanKind,
    TraceStatus, Uuid,
};
use pandaprobe_testing::{Fault, TestServer, SCORES_PATH, TRACES_PATH};
use serde_json::json;

/// Scores `n` records named `{prefix}{i}` for `trace_id`.
fn score_n(client: &Client, trace_id: Uuid, prefix: &str, n: usize) {
    for i in 0..n {
        client
            .score(Score::numeric(trace_id, format!("{prefix}{i}"), 0.5))
            .expect("queued");
    }
}

/// A trace with a NUL character in one place, ended.
fn trace_with_nul_in(client: &Client, place: &str) -> Uuid {
    let nul = "a\0b";
    let builder = match place {
        "name" => client.trace(nul),
        "session id" => client.trace("t").session_id(nul),
        "user id" => client.trace("t").user_id(nul),
        "tag" => client.trace("t").tags(["ok", nul]),
        "input" => client
            .trace("t")
            .input(json!({"messages": [{"content": nul}]})),
        "metadata key" => client.trace("t").metadata(json!({ nul: 1 })),
        _ => client.trace("t"),
    };
    let trace = builder.start();
    let span = trace.span(if place == "span name" { nul } else { "s" }, SpanKind::Llm);
    match place {
        "output" => trace.set_output(json!(nul)),
        "metadata value" => trace.set_metadata(json!({"k": [nul]})),
        "span error" => span.set_error(nul),
        "span model" => span.set_model(nul),
        "span input" => span.set_input(json!({ "q": nul })),
        "span metadata" => span.set_metadata(json!({ nul: nul })),
        _ => {}
    }
    span.end();
    let id = trace.trace_id();
    trace.end();
    id
}

#[test]
fn a_trace_with_a_nul_anywhere_is_stored_without_it_and_counted() {
    let logs = logs(); // installed before anything is logged
    let server = faithful_server(); // it never stores a trace containing NUL
    let client = client_for(&server).build().expect("client");
    let places = [
        "name",
        "session id",
        "user id",
        "tag",
        "input",
        "output",
        "metadata key",
        "metadata value",
        "span name",
        "span error",
        "span model",
        "span input",
        "span metadata",
    ];
    let ids: Vec<Uuid> = places
        .iter()
        .map(|place| trace_with_nul_in(&client, place))
        .collect();
    client.flush(WAIT).expect("sent");
    assert!(server.wait_for_stored_traces(places.len(), WAIT));
    for (place, id) in places.iter().zip(&ids) {
        assert!(
            server.trace_stored_at(*id).is_some(),
            "NUL in {place}: not stored"
        );
    }
    for trace in server.traces() {
        let body = trace.body.to_string();
        assert!(!body.contains("\\u0000"), "{body}");
        assert!(body.contains('\u{FFFD}'), "{body}");
    }
    // "span metadata" has two (key and value), "input" one, every other place one.
    let stats = client.stats();
    assert_eq!(stats.nul_replaced, places.len() as u64 + 1, "{stats}");
    client.shutdown(WAIT).expect("clean shutdown");
    assert!(!logs.lines_with(&["replaced", "NUL character"]).is_empty());
}

#[test]
fn a_wrong_key_reaches_the_hook_for_every_record_with_status_401_and_logs_an_error() {
    let logs = logs(); // installed before anything is logged
    let server = lenient_server();
    let drops = Drops::default();
    let client = client_for(&server)
        .api_key("sk_pp_wrong")
        .on_drop(drops.hook())
        .build()
        .expect("client");
    let trace = client.start_trace("agent");
    let trace_id = trace.trace_id();
    trace
        .score(Score::numeric(trace_id, "held", 0.5))
        .expect("held");
    trace.end();
    let other = Uuid::new_v4();
    score_n(&client, other, "s", 5);
    let flushed = client.flush(WAIT);
    assert_eq!(
        flushed,
        Err(FlushError::Dropped {
            dropped: 7,
            reason: DropReason::Rejected
        }),
        "a wrong key does not look like success"
    );
    let events = drops.events();
    assert_eq!(events.len(), 7, "{events:#?}");
    for event in &events {
        assert_eq!(event.reason(), DropReason::Rejected);
        assert_eq!(event.status(), Some(401), "{event}");
        assert!(
            event
                .message()
                .is_some_and(|m| m.contains("Invalid API key")),
            "{event}"
        );
    }
    let traces: Vec<_> = events
        .iter()
        .filter(|e| e.kind() == RecordKind::Trace)
        .collect();
    assert_eq!(traces.len(), 1);
    assert_eq!(
        (traces[0].trace_id(), traces[0].name()),
        (trace_id, "agent")
    );
    let held = events
        .iter()
        .find(|e| e.name() == "held")
        .expect("held score");
    assert_eq!(held.trace_id(), trace_id);
    let mut names: Vec<&str> = events
        .iter()
        .filter(|e| e.trace_id() == other)
        .map(|e| e.name())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
    let stats = client.stats();
    assert_eq!(
        (stats.scores.dropped.rejected, stats.traces.dropped.rejected),
        (6, 1)
    );
    assert!(!logs
        .lines_with(&[
            "ERROR",
            "PANDAPROBE_API_KEY",
            "PANDAPROBE_PROJECT_NAME",
            "401"
        ])
        .is_empty());
}

#[test]
fn a_server_kept_down_drops_as_retries_exhausted_and_the_hook_says_why() {
    let logs = logs(); // installed before anything is logged
    let server = lenient_server();
    server.stop();
    let drops = Drops::default();
    let client = client_for(&server)
        .max_retries(2)
        .on_drop(drops.hook())
        .build()
        .expect("client");
    let id = Uuid::new_v4();
    score_n(&client, id, "down", 3);
    assert_eq!(
        client.flush(WAIT),
        Err(FlushError::Dropped {
            dropped: 3,
            reason: DropReason::RetriesExhausted
        })
    );
    let events = drops.events();
    assert_eq!(events.len(), 3);
    for event in &events {
        assert_eq!(
            (
                event.kind(),
                event.reason(),
                event.trace_id(),
                event.status()
            ),
            (RecordKind::Score, DropReason::RetriesExhausted, id, None)
        );
        assert!(event.message().is_some_and(|m| !m.is_empty()), "{event}");
    }
    let lines = logs.lines_with(&["WARN", "retries_exhausted", &id.to_string()]);
    assert!(!lines.is_empty(), "one line with an example");
    assert!(lines[0].contains("down"), "{}", lines[0]);
}

#[test]
fn a_panicking_hook_is_caught_and_counted_and_the_worker_goes_on() {
    let logs = logs(); // installed before anything is logged
    let server = lenient_server();
    server.fail_next_on(SCORES_PATH, 3, Fault::Status(422));
    let client = client_for(&server)
        .max_in_flight(1)
        .on_drop(|_| panic!("a hook with a bug"))
        .build()
        .expect("client");
    let id = Uuid::new_v4();
    score_n(&client, id, "s", 10);
    let flushed = client.flush(WAIT);
    assert!(
        matches!(flushed, Err(FlushError::Dropped { dropped: 3, .. })),
        "{flushed:?}"
    );
    let stats = client.stats();
    assert_eq!((stats.hook_panics, stats.scores.sent), (3, 7), "{stats}");
    client
        .score(Score::numeric(id, "after", 0.5))
        .expect("still taking scores");
    client.flush(WAIT).expect("still delivering");
    assert!(!logs.lines_with(&["on_drop hook panicked"]).is_empty());
}

#[test]
fn shutdown_tells_records_lost_from_requests_abandoned_in_flight() {
    let server = lenient_server();
    server.set_responder(|_| Some(Fault::Hang));
    let drops = Drops::default();
    let client = client_for(&server)
        .max_in_flight(4)
        .on_drop(drops.hook())
        .build()
        .expect("client");
    let id = Uuid::new_v4();
    score_n(&client, id, "s", 10);
    assert!(server.wait_for_requests(4, WAIT), "four in flight");
    let result = client.shutdown(Duration::from_secs(1));
    assert_eq!(
        common::timed_out(&result),
        Some((10, Duration::from_secs(1)))
    );
    let stats = client.stats();
    assert_eq!(stats.scores.dropped.shutdown_in_flight, 4, "{stats}");
    assert_eq!(stats.scores.dropped.shutdown, 6, "{stats}");
    assert_accounted(&stats);
    let in_flight = drops
        .events()
        .iter()
        .filter(|e| e.reason() == DropReason::ShutdownInFlight)
        .count();
    assert_eq!((in_flight, drops.events().len()), (4, 10));
}

#[test]
fn a_used_up_quota_drops_traces_at_once_without_pausing_anything() {
    let logs = logs(); // installed before anything is logged
    let server = TestServer::builder()
        .lenient()
        .trace_quota(2)
        .start()
        .expect("test server");
    let drops = Drops::default();
    let client = client_for(&server)
        .on_drop(drops.hook())
        .build()
        .expect("client");
    for _ in 0..5 {
        let trace = client.start_trace("agent");
        trace
            .score(Score::numeric(trace.trace_id(), "held", 0.5))
            .expect("held");
        trace.end();
    }
    let other = Uuid::new_v4();
    score_n(&client, other, "s", 20);
    let flushed = client.flush(WAIT);
    assert!(
        matches!(
            flushed,
            Err(FlushError::Dropped {
                dropped: 6,
                reason: DropReason::QuotaExceeded
            })
        ),
        "{flushed:?}"
    );
    let stats = client.stats();
    assert_eq!(stats.traces.dropped.quota_exceeded, 3, "{stats}");
    assert_eq!(
        stats.scores.dropped.quota_exceeded, 3,
        "their scores go with them"
    );
    assert_eq!(stats.scores.sent, 22);
    let trace_requests = server
        .requests()
        .iter()
        .filter(|r| r.path == TRACES_PATH)
        .count();
    assert_eq!(trace_requests, 5, "one request each: no retry can help");
    assert_eq!(drops.events().len(), 6);
    assert!(!logs.lines_with(&["ERROR", "quota"]).is_empty());
}

#[test]
fn a_trace_ended_by_a_panic_is_sent_with_status_error() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let worker_client = client.clone();
    let (id_tx, id_rx) = mpsc::channel();
    let panicked = thread::spawn(move || {
        let trace = worker_client.start_trace("agent");
        let _span = trace.span("tool", SpanKind::Tool);
        id_tx.send(trace.trace_id()).expect("send");
        panic!("the agent failed");
    })
    .join();
    assert!(panicked.is_err());
    let id = id_rx.recv().expect("trace id");
    client.flush(WAIT).expect("sent");
    let trace = server
        .traces()
        .into_iter()
        .find(|t| t.id == id)
        .expect("the trace arrived");
    assert_eq!(trace.body["status"], "ERROR");
    assert_eq!(trace.body["spans"][0]["status"], "ERROR");
    let _ = TraceStatus::Error; // the status it maps to
}

#[test]
fn the_global_score_holds_no_lock_while_the_client_works() {
    // A score blocked on a full queue (Block policy) must not block `init` from another
    // thread: the global client is cloned out of its lock before it is used.
    let server = lenient_server();
    server.set_responder(|_| Some(Fault::Hang));
    let client = client_for(&server)
        .max_queue_size(1)
        .max_in_flight(1)
        .queue_full(QueueFullPolicy::Block(Duration::from_secs(5)))
        .build()
        .expect("client");
    let _guard = pandaprobe::init(client);
    let id = Uuid::new_v4();
    for i in 0..3 {
        let _ = pandaprobe::score(Score::numeric(id, format!("fill{i}"), 0.5));
    }
    let (done_tx, done_rx) = mpsc::channel();
    let score_done = done_tx.clone();
    let blocked = thread::spawn(move || {
        let result = pandaprobe::score(Score::numeric(id, "blocked", 0.5));
        let _ = score_done.send("score");
        result
    });
    assert!(server.wait_for_requests(1, WAIT));
    // The blocked score is counted as accepted once it is inside the client, waiting for room:
    // only then is the global replaced (else it would go to the new one).
    assert!(
        wait_until(WAIT, || _guard.client().stats().scores.accepted == 4),
        "the score is waiting for room"
    );
    let replaced = thread::spawn(move || {
        let guard = pandaprobe::init(Client::disabled());
        let _ = done_tx.send("init");
        guard
    });
    assert_eq!(done_rx.recv_timeout(WAIT), Ok("init"), "init did not wait");
    assert_eq!(
        blocked.join().expect("thread"),
        Err(ScoreError::QueueFull),
        "the blocked score timed out on its own"
    );
    drop(replaced.join().expect("thread"));
}

#[test]
fn scores_of_a_trace_that_is_never_stored_are_dropped_with_it_not_retried_forever() {
    // A trace the server accepts and never stores (as it does with NUL, before the SDK
    // replaced it): its scores, waiting for it, give up together when their time is out.
    let server = faithful_server();
    server.fail_next(
        1,
        Fault::Raw {
            status: 202,
            headers: vec![],
            body: r#"{"trace_id":"x","task_id":"y"}"#.into(),
        },
    );
    let drops = Drops::default();
    let client = client_for(&server)
        .retry_max_elapsed(Duration::from_secs(1))
        .on_drop(drops.hook())
        .build()
        .expect("client");
    let trace = client.start_trace("lost");
    let id = trace.trace_id();
    trace.end();
    for name in ["a", "b", "c"] {
        client.score(Score::numeric(id, name, 0.5)).expect("queued");
    }
    let flushed = client.flush(Duration::from_secs(20));
    assert!(
        matches!(
            flushed,
            Err(FlushError::Dropped {
                dropped: 3,
                reason: DropReason::RetriesExhausted
            })
        ),
        "{flushed:?}"
    );
    let score_requests = server
        .requests()
        .iter()
        .filter(|r| r.path == SCORES_PATH)
        .count();
    assert_eq!(score_requests, 0, "the server never said it was stored");
    assert!(client.stats().probes >= 3, "{}", client.stats());
    let events = drops.events();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| e.trace_id() == id && e.status() == Some(404)),
        "the probes' 404: {events:#?}"
    );
    let with_trace = events
        .iter()
        .filter(|e| {
            e.message()
                .is_some_and(|m| m.contains("trace was not stored"))
        })
        .count();
    assert_eq!(with_trace, 3, "each says why: {events:#?}");
}

#[test]
fn spans_past_500_that_the_server_refuses_are_counted_and_logged_and_the_rest_delivered() {
    let logs = logs(); // installed before anything is logged
    let server = lenient_server();
    // Refuse the requests that add more than one span (a probe re-posts one).
    server.set_responder(|req| {
        let many = req.path.ends_with("/spans")
            && serde_json::from_slice::<serde_json::Value>(&req.body)
                .ok()
                .and_then(|v| v.as_array().map(Vec::len))
                .is_some_and(|n| n > 1);
        many.then_some(Fault::Status(422))
    });
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("too-long");
    let id = trace.trace_id();
    for i in 0..1200 {
        trace.span(format!("s{i}"), SpanKind::Tool).end();
    }
    trace.end();
    client
        .score(Score::numeric(id, "kept", 0.5))
        .expect("queued");
    client
        .flush(WAIT)
        .expect("the trace and its score were delivered");
    let stats = client.stats();
    assert_eq!(stats.spans_dropped, 700, "{stats}");
    assert_eq!(stats.spans_added, 0);
    assert_eq!(stats.traces.sent, 1);
    assert_eq!(stats.scores.sent, 1);
    assert_eq!(server.score_count(), 1);
    assert!(
        wait_until(WAIT, || !logs
            .lines_with(&["WARN", "span(s) past the trace's first 500 were dropped"])
            .is_empty()),
        "logged"
    );
}

/// A score handed in while `shutdown()` runs is delivered, or dropped and reported to the hook:
/// never freed with the queue unreported. Rounds of four threads scoring as fast as they can
/// while the client shuts down.
#[test]
fn scores_racing_shutdown_are_delivered_or_reported_never_freed_silently() {
    for round in 0..10 {
        let server = lenient_server();
        let drops = Drops::default();
        let client = client_for(&server)
            .on_drop(drops.hook())
            .build()
            .expect("client");
        let trace_id = Uuid::new_v4();
        let scorers: Vec<_> = (0..4)
            .map(|t| {
                let client = client.clone();
                thread::spawn(move || {
                    let mut ok = 0u64;
                    for i in 0.. {
                        match client.score(Score::numeric(trace_id, format!("t{t}-{i}"), 0.5)) {
                            Ok(()) => ok += 1,
                            Err(ScoreError::QueueFull) => thread::yield_now(),
                            Err(ScoreError::ShutDown) => break,
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        assert!(server.wait_for_scores(50, WAIT), "scoring started");
        let shut = client.shutdown(WAIT);
        let accepted_ok: u64 = scorers.into_iter().map(|h| h.join().expect("scorer")).sum();
        let reported = drops
            .events()
            .iter()
            .filter(|e| e.kind() == RecordKind::Score)
            .count() as u64;
        let delivered = server.score_count() as u64;
        assert_eq!(
            accepted_ok,
            delivered + reported,
            "round {round}: {accepted_ok} accepted, {delivered} delivered, {reported} reported \
             ({shut:?}; {})",
            client.stats()
        );
    }
}

/// A drop hook runs on the worker's thread: a `score()` from inside it never waits for room
/// there (under `QueueFullPolicy::Block` it would wait for the worker itself).
#[test]
fn a_hook_that_scores_under_the_block_policy_never_stalls_the_worker() {
    let server = lenient_server();
    server.set_responder(|req| (req.path == SCORES_PATH).then_some(Fault::Status(422)));
    let slot: std::sync::Arc<std::sync::OnceLock<pandaprobe::WeakClient>> = Default::default();
    let results: std::sync::Arc<std::sync::Mutex<Vec<Result<(), ScoreError>>>> = Default::default();
    let hook = {
        let (slot, results) = (slot.clone(), results.clone());
        move |event: &pandaprobe::DropEvent| {
            let client = slot.get().and_then(pandaprobe::WeakClient::upgrade);
            if let (Some(client), true) = (client, event.name().starts_with("original")) {
                let result = client.score(Score::numeric(Uuid::new_v4(), "from-hook", 0.5));
                results.lock().expect("results").push(result);
            }
        }
    };
    let client = client_for(&server)
        .max_queue_size(2)
        .max_in_flight(1)
        .queue_full(QueueFullPolicy::Block(Duration::from_secs(3)))
        .on_drop(hook)
        .build()
        .expect("client");
    let _ = slot.set(client.downgrade());
    let started = std::time::Instant::now();
    for i in 0..20 {
        let _ = client.score(Score::numeric(Uuid::new_v4(), format!("original-{i}"), 0.5));
    }
    let _ = client.flush(WAIT);
    let took = started.elapsed();
    let results = results.lock().expect("results").clone();
    assert!(!results.is_empty(), "the hook ran");
    assert!(
        took < Duration::from_secs(3),
        "{took:?}: a hook's score waited for room on the worker's thread ({results:?})"
    );
}

/// A hook that holds the client (weakly: a strong handle inside the client's own hook would
/// own its owner) scores from inside; dropping the last user handle still shuts the client
/// down, and the shutdown delivers what the hook scored.
#[test]
fn a_hook_holding_the_client_scores_and_the_last_handle_still_shuts_it_down() {
    let server = lenient_server();
    server.set_responder(|req| {
        let original = String::from_utf8_lossy(&req.body).contains("\"original-");
        (req.path == SCORES_PATH && original).then_some(Fault::Status(422))
    });
    let slot: std::sync::Arc<std::sync::OnceLock<pandaprobe::WeakClient>> = Default::default();
    let hook = {
        let slot = slot.clone();
        move |event: &pandaprobe::DropEvent| {
            if let Some(client) = slot.get().and_then(pandaprobe::WeakClient::upgrade) {
                let name = format!("lost-{}", event.name());
                let _ = client.score(Score::boolean(event.trace_id(), name, true));
            }
        }
    };
    let client = client_for(&server).on_drop(hook).build().expect("client");
    let _ = slot.set(client.downgrade());
    for i in 0..3 {
        client
            .score(Score::numeric(Uuid::new_v4(), format!("original-{i}"), 0.5))
            .expect("queued");
    }
    // The three are refused and hooked before the flush returns; the hook's scores are queued.
    assert!(client.flush(WAIT).is_err(), "the originals were refused");
    let weak = client.downgrade();
    drop(client);
    assert!(
        weak.upgrade().is_none(),
        "the last user handle shut the client down"
    );
    let mut lost: Vec<String> = server
        .scores()
        .iter()
        .filter_map(|s| s.body["name"].as_str().map(str::to_owned))
        .collect();
    lost.sort();
    assert_eq!(
        lost,
        ["lost-original-0", "lost-original-1", "lost-original-2"]
    );
}
