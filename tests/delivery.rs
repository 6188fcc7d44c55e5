//! Delivery on a healthy server: what goes on the wire (bodies byte for byte, headers, one
//! `X-Request-ID` per record), what `flush`, `shutdown` and dropping the last handle guarantee,
//! the global client, a disabled client, the API key kept secret, the stats identity under
//! load, and a full queue (both policies, exact accounting, the worker woken).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    abandoned, assert_accounted, assert_all_sent, assert_request_ids_stable, client_for,
    hanging_server, lenient_server, parked, score_batch, score_from_threads, Drops, PROJECT,
    TRACE_ID, WAIT,
};
use pandaprobe::{
    Client, ClientBuilder, ConfigError, FlushError, QueueFullPolicy, Score, ScoreDataType,
    ScoreError, SpanKind, Stats, Uuid,
};
use pandaprobe_testing::{Fault, TestServer, SCORES_PATH};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// On the wire
// ---------------------------------------------------------------------------------------------

#[test]
fn bodies_and_headers_match_the_contract_for_each_data_type() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let t = TRACE_ID;
    let uuid = Uuid::parse_str(t).expect("a UUID");
    let body = |rest: &str| format!(r#"{{"trace_id":"{t}",{rest}}}"#);
    let scores = vec![
        // The contract's two byte-exact examples from the Python SDK.
        (
            Score::new(t, "accuracy", "0.85")
                .reason("close enough")
                .metadata(json!({"judge": "unit"})),
            body(
                r#""name":"accuracy","value":"0.85","data_type":"NUMERIC","source":"PROGRAMMATIC","reason":"close enough","metadata":{"judge":"unit"}"#,
            ),
        ),
        (
            Score::new(t, "verdict", "PASS").data_type(ScoreDataType::Categorical),
            body(
                r#""name":"verdict","value":"PASS","data_type":"CATEGORICAL","source":"PROGRAMMATIC""#,
            ),
        ),
        // NUMERIC as text, with a reason and no metadata.
        (
            Score::new(t, "user_satisfaction", "0.9").reason("User clicked thumbs up"),
            body(
                r#""name":"user_satisfaction","value":"0.9","data_type":"NUMERIC","source":"PROGRAMMATIC","reason":"User clicked thumbs up""#,
            ),
        ),
        // NUMERIC from a float, trace id as a Uuid.
        (
            Score::numeric(uuid, "relevance", 0.9),
            body(
                r#""name":"relevance","value":"0.9","data_type":"NUMERIC","source":"PROGRAMMATIC""#,
            ),
        ),
        (
            Score::numeric(uuid, "lower_bound", 0.0),
            body(
                r#""name":"lower_bound","value":"0","data_type":"NUMERIC","source":"PROGRAMMATIC""#,
            ),
        ),
        // NUMERIC text the server reads like Python's float(): sent exactly as given.
        (
            Score::new(t, "python_float", " 0.2_5"),
            body(
                r#""name":"python_float","value":" 0.2_5","data_type":"NUMERIC","source":"PROGRAMMATIC""#,
            ),
        ),
        // BOOLEAN, typed, and text relabelled (sent as given, not lowercased).
        (
            Score::boolean(t, "hallucination_free", true),
            body(
                r#""name":"hallucination_free","value":"true","data_type":"BOOLEAN","source":"PROGRAMMATIC""#,
            ),
        ),
        (
            Score::boolean(t, "toxic", false),
            body(r#""name":"toxic","value":"false","data_type":"BOOLEAN","source":"PROGRAMMATIC""#),
        ),
        (
            Score::new(t, "relabelled", "TRUE").data_type(ScoreDataType::Boolean),
            body(
                r#""name":"relabelled","value":"TRUE","data_type":"BOOLEAN","source":"PROGRAMMATIC""#,
            ),
        ),
        // CATEGORICAL with reason and nested metadata; with metadata only; an empty label.
        (
            Score::categorical(t, "sentiment", "positive")
                .reason("tone")
                .metadata(json!({"judge": "v2", "n": 1, "nested": {"a": [1, 2]}})),
            body(
                r#""name":"sentiment","value":"positive","data_type":"CATEGORICAL","source":"PROGRAMMATIC","reason":"tone","metadata":{"judge":"v2","n":1,"nested":{"a":[1,2]}}"#,
            ),
        ),
        (
            Score::categorical(t, "label", "B").metadata(json!({"k": "v"})),
            body(
                r#""name":"label","value":"B","data_type":"CATEGORICAL","source":"PROGRAMMATIC","metadata":{"k":"v"}"#,
            ),
        ),
        (
            Score::categorical(t, "empty_label", ""),
            body(
                r#""name":"empty_label","value":"","data_type":"CATEGORICAL","source":"PROGRAMMATIC""#,
            ),
        ),
        // A trace id given in upper case or without hyphens is sent in the canonical form.
        (
            Score::numeric(t.to_uppercase(), "upper_case_id", 0.5),
            body(
                r#""name":"upper_case_id","value":"0.5","data_type":"NUMERIC","source":"PROGRAMMATIC""#,
            ),
        ),
        (
            Score::numeric(t.replace('-', ""), "simple_id", 1.0),
            body(r#""name":"simple_id","value":"1","data_type":"NUMERIC","source":"PROGRAMMATIC""#),
        ),
    ];
    let n = scores.len();
    let mut expected: HashMap<String, String> = HashMap::new();
    for (score, body) in scores {
        let name = score.name().to_owned();
        assert_eq!(
            String::from_utf8(score.to_body().expect("valid")).expect("UTF-8"),
            body,
            "to_body of {name:?}"
        );
        client.score(score).expect("a valid score is accepted");
        assert!(expected.insert(name, body).is_none(), "names are unique");
    }
    client.flush(WAIT).expect("flush delivers every score");

    let requests = server.requests();
    assert_eq!(requests.len(), n, "one request per score, no retries");
    let user_agent = format!("pandaprobe-rust/{}", env!("CARGO_PKG_VERSION"));
    for req in &requests {
        let body = String::from_utf8(req.body.to_vec()).expect("UTF-8 body");
        let name = req
            .json()
            .and_then(|v| v["name"].as_str().map(str::to_owned))
            .expect("a JSON body with a name");
        let want = expected
            .remove(&name)
            .unwrap_or_else(|| panic!("unexpected or duplicate score {name:?}: {body}"));
        assert_eq!(body, want, "body of {name:?}");
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, SCORES_PATH);
        assert_eq!(req.status, Some(201), "{name:?} stored");
        assert_eq!(req.header("x-api-key"), Some(server.api_key()));
        assert_eq!(req.header("x-project-name"), Some(PROJECT));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("user-agent"), Some(user_agent.as_str()));
        assert_eq!(req.header("content-encoding"), None, "never compressed");
    }
    assert!(expected.is_empty(), "never received: {:?}", expected.keys());
    assert_request_ids_stable(&server);
    assert_eq!(server.score_count(), n);

    let stats = client.stats();
    assert_accounted(&stats);
    assert_all_sent(&stats.scores, n as u64);
    assert_eq!(stats.scores.retried, 0);
    assert_eq!(stats.requests, n as u64);
    client.shutdown(WAIT).expect("clean shutdown");
}

/// Every record has its own `X-Request-ID`, and keeps it on every retry, so that the server's
/// log can tie the attempts of one record together.
#[test]
fn x_request_id_is_one_per_record_and_the_same_on_every_retry() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 25;
    let server = lenient_server();
    // The k-th record to reach the server (by request id) fails its first `k % 3` attempts:
    // none, one or two 503s before its 201.
    let attempts = Mutex::new(HashMap::<String, (usize, usize)>::new());
    server.set_responder(move |req| {
        let id = req.header("x-request-id")?.to_owned();
        let mut attempts = attempts.lock().expect("responder lock");
        let k = attempts.len();
        let (record, tries) = attempts.entry(id).or_insert((k, 0));
        *tries += 1;
        (*tries <= *record % 3).then_some(Fault::Status(503))
    });
    let client = client_for(&server).build().expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), ((THREADS * PER_THREAD) as u64, vec![]));
    client.flush(WAIT).expect("flush");
    let stats = client.stats();
    assert_accounted(&stats);
    assert_all_sent(&stats.scores, ok);
    let failures: u64 = (0..ok).map(|k| k % 3).sum();
    assert_eq!(stats.scores.retried, failures, "{stats}");
    assert_eq!(server.status_count(503) as u64, failures);
    assert_request_ids_stable(&server);
    assert_eq!(common::stored(&server).duplicates, 0);
}

// ---------------------------------------------------------------------------------------------
// Flush, shutdown, and dropping the last handle
// ---------------------------------------------------------------------------------------------

#[test]
fn flush_covers_every_score_of_each_producer_thread() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    let server = lenient_server();
    let client = client_for(&server)
        .batch_size(50)
        .flush_interval(Duration::from_millis(200))
        .build()
        .expect("client");

    thread::scope(|scope| {
        for t in 0..THREADS {
            let client = client.clone();
            let server = &server;
            scope.spawn(move || {
                for n in 0..PER_THREAD {
                    client
                        .score(common::keyed_score(t, n))
                        .unwrap_or_else(|e| panic!("thread {t} score {n}: {e}"));
                }
                client
                    .flush(WAIT)
                    .unwrap_or_else(|e| panic!("thread {t}: flush failed: {e}"));
                // Every score this thread made before its flush is on the server now.
                let mine: HashSet<u64> = server
                    .scores()
                    .iter()
                    .filter(|s| s.body["metadata"]["t"] == t)
                    .filter_map(|s| s.body["metadata"]["n"].as_u64())
                    .collect();
                assert_eq!(mine.len(), PER_THREAD, "thread {t} after its own flush");
            });
        }
    });

    client.flush(WAIT).expect("final flush");
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(
        common::stored(&server),
        common::Stored {
            total,
            unique: total,
            duplicates: 0
        },
        "no loss, no duplicate"
    );
    let stats = client.stats();
    assert_accounted(&stats);
    assert_all_sent(&stats.scores, total);
    assert_eq!(stats.requests, total);
    client.shutdown(WAIT).expect("clean shutdown");
}

#[test]
fn shutdown_drains_the_queue_and_is_idempotent() {
    const N: usize = 300;
    let server = lenient_server();
    let client = parked(client_for(&server)).build().expect("client");
    score_batch(&client, "drain", N);
    assert_eq!(client.stats().scores.pending, N as u64, "queued");
    assert_eq!(
        server.request_count(),
        0,
        "a parked worker has sent nothing yet"
    );

    client.shutdown(WAIT).expect("shutdown delivers everything");
    assert_eq!(server.score_count(), N, "every queued score delivered");
    let stats = client.stats();
    assert_accounted(&stats);
    assert_all_sent(&stats.scores, N as u64);

    // Idempotent: the same outcome again, at once, from any clone.
    let clone = client.clone();
    let started = Instant::now();
    assert_eq!(clone.shutdown(WAIT), Ok(()));
    assert_eq!(client.shutdown(Duration::from_millis(1)), Ok(()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a repeated shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(client.flush(WAIT), Err(FlushError::ShutDown));
    assert_eq!(
        clone.score(Score::numeric(TRACE_ID, "after", 0.5)),
        Err(ScoreError::ShutDown)
    );
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        (s.accepted, s.sent, s.dropped.shutdown, s.dropped.total()),
        (N as u64 + 1, N as u64, 1, 1),
        "{s}"
    );
    assert_eq!(server.score_count(), N);
}

#[test]
fn dropping_the_last_handle_delivers() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250;
    let server = lenient_server();
    let client = parked(client_for(&server)).build().expect("client");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                score_batch(&client, &format!("dropped-{t}"), PER_THREAD);
                // The clone is dropped here, with records still queued.
            })
        })
        .collect();
    for h in handles {
        h.join().expect("producer thread");
    }
    let total = (THREADS * PER_THREAD) as u64;
    let s = client.stats().scores;
    assert_eq!((s.accepted, s.pending), (total, total), "{s}");
    assert_eq!(server.request_count(), 0, "still parked before the drop");

    drop(client); // the last handle: shuts down with the default shutdown_timeout
                  // The drop returned after the worker finished: everything is on the server already.
    assert_eq!(server.score_count() as u64, total);
    assert_eq!(server.status_count(201) as u64, total);
}

/// Requests under way when the last handle goes are waited for, within the shutdown timeout.
#[test]
fn dropping_the_last_handle_waits_for_requests_in_flight() {
    const SLOW: usize = 4;
    const N: usize = 40;
    let server = lenient_server();
    server.set_responder(|req| (req.index < SLOW).then_some(Fault::Delay(Duration::from_secs(1))));
    // Every score wakes the worker: the requests go out at once.
    let client = client_for(&server).batch_size(1).build().expect("client");
    score_batch(&client, "in-flight", N);
    assert!(server.wait_for_requests(N, WAIT), "the requests went out");
    assert!(
        server.score_count() < N,
        "the slow ones are still under way"
    );
    drop(client);
    assert_eq!(
        server.score_count(),
        N,
        "the drop waited for the slow answers"
    );
}

/// With requests that never end, dropping the last handle still returns, at the shutdown
/// timeout.
#[test]
fn dropping_the_last_handle_with_requests_hanging_returns_at_the_shutdown_timeout() {
    const HANGING: usize = 4;
    const N: usize = 40;
    const SHUTDOWN: Duration = Duration::from_secs(1);
    let server = lenient_server();
    server.set_responder(|req| (req.index < HANGING).then_some(Fault::Hang));
    let client = client_for(&server)
        .batch_size(1)
        .max_in_flight(8)
        .request_timeout(Duration::from_secs(60))
        .shutdown_timeout(SHUTDOWN)
        .build()
        .expect("client");
    score_batch(&client, "hanging", N);
    assert!(
        server.wait_for_scores(N - HANGING, WAIT),
        "the records that do not hang were stored"
    );
    let started = Instant::now();
    drop(client);
    let took = started.elapsed();
    assert!(
        took >= SHUTDOWN && took < SHUTDOWN + Duration::from_secs(2),
        "drop took {took:?}"
    );
    assert_eq!(server.score_count(), N - HANGING);
}

// ---------------------------------------------------------------------------------------------
// The global client (process-wide: every use of it in this binary is in this one test)
// ---------------------------------------------------------------------------------------------

#[test]
fn the_global_client_guard_module_functions_and_async_variants() {
    let server = lenient_server();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // No global client: every function is a no-op that succeeds.
    assert!(pandaprobe::client().is_none());
    assert_eq!(
        pandaprobe::score(Score::numeric(TRACE_ID, "nobody", 0.5)),
        Ok(())
    );
    assert_eq!(pandaprobe::score(Score::new("not-a-uuid", "", "")), Ok(()));
    assert_eq!(pandaprobe::flush(WAIT), Ok(()));
    assert_eq!(runtime.block_on(pandaprobe::flush_async(WAIT)), Ok(()));
    assert_eq!(pandaprobe::shutdown(WAIT), Ok(()));
    assert_eq!(runtime.block_on(pandaprobe::shutdown_async(WAIT)), Ok(()));
    // A trace records nothing but is a working handle, with a fresh id every time.
    let orphan = pandaprobe::start_trace("no-client");
    let orphan_id = orphan.trace_id();
    assert_eq!(orphan_id.get_version_num(), 4, "a fresh v4 UUID");
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
    assert_ne!(other.trace_id(), orphan_id);
    other.end();
    assert_eq!(server.request_count(), 0);

    // With a global client: the module functions reach it.
    let client = parked(client_for(&server))
        .environment("global-env")
        .build()
        .expect("client");
    let observer = client.clone();
    let guard = pandaprobe::init(client);
    assert!(pandaprobe::client().is_some());
    score_batch_global("global", 10);
    assert_eq!(
        pandaprobe::score(Score::new(TRACE_ID, "bad", "2")),
        Err(ScoreError::InvalidNumeric("2".into())),
        "the global client validates"
    );
    let trace = pandaprobe::start_trace("global");
    let trace_id = trace.trace_id();
    trace.span("step", SpanKind::Agent).end();
    trace.end();
    let custom = Uuid::new_v4();
    pandaprobe::trace("built")
        .trace_id(custom)
        .user_id("u-1")
        .start()
        .end();
    pandaprobe::flush(WAIT).expect("global flush");
    assert_eq!(
        server.score_count(),
        10,
        "flushed through the global client"
    );
    let traces = server.traces();
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[0].id, trace_id);
    assert_eq!(traces[0].body["name"], "global");
    assert_eq!(traces[0].body["environment"], "global-env");
    assert_eq!(traces[1].id, custom, "the builder's own trace id");
    assert_eq!(traces[1].body["user_id"], "u-1");
    score_batch_global("async", 5);
    runtime
        .block_on(pandaprobe::flush_async(WAIT))
        .expect("global flush_async");
    assert_eq!(server.score_count(), 15);

    // At exit: the guard delivers what is queued.
    // (The worker may still be looking at the queue on its own after the flush, so some of
    // these can go out before the drop; the drop returns once all of them are delivered.)
    score_batch_global("at-exit", 20);
    assert_eq!(guard.client().stats().scores.accepted, 35);
    drop(guard);
    assert_eq!(server.score_count(), 35, "the guard delivered at drop");
    // The guard shut the client down (every handle) and cleared the global slot.
    assert!(pandaprobe::client().is_none());
    assert_eq!(
        pandaprobe::score(Score::numeric(TRACE_ID, "after", 0.5)),
        Ok(())
    );
    assert_eq!(
        observer.score(Score::numeric(TRACE_ID, "late", 0.5)),
        Err(ScoreError::ShutDown)
    );
    let s = observer.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!((s.accepted, s.sent, s.dropped.shutdown), (36, 35, 1), "{s}");
    assert_eq!(observer.stats().traces.sent, 2);

    // A later `init` replaces the client; the earlier guard's drop leaves the new one in place.
    let first = pandaprobe::init(client_for(&server).build().expect("client"));
    let second_client = client_for(&server).build().expect("client");
    let second = pandaprobe::init(second_client.clone());
    drop(first);
    assert!(
        pandaprobe::client().is_some(),
        "the second client stays global"
    );
    pandaprobe::score(Score::numeric(TRACE_ID, "to-the-second", 0.5)).expect("score");
    assert_eq!(
        runtime.block_on(pandaprobe::shutdown_async(WAIT)),
        Ok(()),
        "global shutdown_async delivers"
    );
    assert_eq!(server.score_count(), 36);
    assert_eq!(
        second_client.score(Score::numeric(TRACE_ID, "late", 0.5)),
        Err(ScoreError::ShutDown)
    );
    drop(second);
    assert!(pandaprobe::client().is_none());
}

fn score_batch_global(prefix: &str, n: usize) {
    for i in 0..n {
        pandaprobe::score(Score::numeric(TRACE_ID, format!("{prefix}-{i}"), 0.5))
            .unwrap_or_else(|e| panic!("{prefix}-{i}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// A disabled client; the API key
// ---------------------------------------------------------------------------------------------

fn assert_disabled_client_is_inert(server: &TestServer, client: &Client) {
    assert!(!client.is_enabled());
    for score in [
        Score::numeric(TRACE_ID, "fine", 0.5),
        Score::new("not-a-uuid", "", "nan"),
        Score::categorical(TRACE_ID, "x", "").metadata(json!([1])),
        Score::new(TRACE_ID, "b", "yes").data_type(ScoreDataType::Boolean),
    ] {
        assert_eq!(
            client.score(score),
            Ok(()),
            "a disabled client takes everything"
        );
    }
    let trace = client.trace("off").session_id("s").start();
    trace.span("span", SpanKind::Tool).end();
    trace
        .score(Score::numeric(trace.trace_id(), "q", 0.5))
        .expect("score through the trace");
    trace.end();
    assert_eq!(client.flush(WAIT), Ok(()));
    assert_eq!(client.shutdown(WAIT), Ok(()));
    assert_eq!(client.score(Score::numeric(TRACE_ID, "after", 0.5)), Ok(()));
    assert_eq!(client.stats(), Stats::default(), "all zero");
    assert_eq!(format!("{client:?}"), "Client { enabled: false }");
    assert_eq!(server.request_count(), 0, "nothing sent");
}

#[test]
fn a_disabled_client_accepts_everything_and_sends_nothing() {
    let server = lenient_server();
    let client = client_for(&server).enabled(false).build().expect("client");
    assert_disabled_client_is_inert(&server, &client);
    // No key or project is needed when disabled.
    let bare = Client::builder()
        .enabled(false)
        .build()
        .expect("no key needed");
    assert_disabled_client_is_inert(&server, &bare);
    assert_disabled_client_is_inert(&server, &Client::disabled());

    let vars = |enabled: &'static str| {
        ClientBuilder::from_vars([
            ("PANDAPROBE_ENABLED", enabled.to_owned()),
            ("PANDAPROBE_API_KEY", server.api_key().to_owned()),
            ("PANDAPROBE_PROJECT_NAME", PROJECT.to_owned()),
            ("PANDAPROBE_ENDPOINT", server.url()),
        ])
    };
    for off in ["false", "0", "no", "off", "FALSE", ""] {
        let client = vars(off).build().expect("client from vars");
        assert!(!client.is_enabled(), "PANDAPROBE_ENABLED={off:?}");
        assert_disabled_client_is_inert(&server, &client);
    }
    // And "true" really enables (so the loop above could fail).
    for on in ["True", "1", " YES "] {
        let client = vars(on).build().expect("client from vars");
        assert!(client.is_enabled(), "PANDAPROBE_ENABLED={on:?}");
        client.shutdown(WAIT).expect("clean shutdown");
    }
}

#[test]
fn the_api_key_never_shows_in_debug_or_display() {
    const SECRET: &str = "sk_pp_TopSecret_0123456789";
    let server = TestServer::builder()
        .lenient()
        .api_key(SECRET)
        .start()
        .expect("test server");
    let leaks = |text: &str| text.contains("TopSecret");

    let builder = client_for(&server).api_key(SECRET);
    for text in [format!("{builder:?}"), format!("{builder:#?}")] {
        assert!(!leaks(&text), "ClientBuilder Debug leaks the key: {text}");
    }
    let client = builder.build().expect("client");
    client
        .score(Score::numeric(TRACE_ID, "secret", 0.5))
        .expect("accepted");
    client.flush(WAIT).expect("delivered with the right key");
    assert_eq!(server.score_count(), 1);
    let stats = client.stats();
    for text in [
        format!("{client:?}"),
        format!("{client:#?}"),
        format!("{stats}"),
        format!("{stats:?}"),
    ] {
        assert!(
            !leaks(&text),
            "Client or Stats output leaks the key: {text}"
        );
    }

    // A key the server refuses: the flush error says so, without the key. (Parked, so that the
    // flush sees the drop: it only sees drops that happen while it waits.)
    let wrong = parked(client_for(&server))
        .api_key("sk_pp_TopSecret_but_wrong")
        .build()
        .expect("client");
    wrong
        .score(Score::numeric(TRACE_ID, "refused", 0.5))
        .expect("accepted");
    let err = wrong.flush(WAIT).expect_err("the server refuses the key");
    assert!(
        matches!(
            err,
            FlushError::Dropped {
                dropped: 1,
                reason: pandaprobe::DropReason::Rejected
            }
        ),
        "{err:?}"
    );
    assert!(!leaks(&format!("{err} {err:?} {wrong:?}")), "{err}");

    // A key that cannot be sent: the error names the setting, not the key.
    let bad = Client::builder()
        .api_key("sk_pp_TopSecret\n0123")
        .project_name(PROJECT)
        .build()
        .expect_err("a newline cannot go in a header");
    let text = format!("{bad} {bad:?}");
    assert!(text.contains("api_key"), "{text}");
    assert!(!leaks(&text), "ConfigError leaks the key: {text}");
    // Configuration from variables too.
    let from_vars = ClientBuilder::from_vars([("PANDAPROBE_API_KEY", SECRET)]);
    assert!(!leaks(&format!("{from_vars:?}")));
    let missing_project = from_vars.build().expect_err("no project");
    assert!(matches!(
        missing_project,
        ConfigError::Missing {
            setting: "project_name",
            ..
        }
    ));
    assert!(!leaks(&format!("{missing_project} {missing_project:?}")));
}

// ---------------------------------------------------------------------------------------------
// The stats identity, sampled while producers score and the worker delivers
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_identity_holds_at_every_moment_under_load() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 750;
    let server = lenient_server();
    // Fail one first attempt in seven with a 503, so retries happen while sampling.
    let seen = Mutex::new(HashSet::new());
    server.set_responder(move |req| {
        let id = req.header("x-request-id")?.to_owned();
        let first = seen.lock().expect("responder lock").insert(id);
        (first && req.index % 7 == 3).then_some(Fault::Status(503))
    });
    let client = client_for(&server)
        .batch_size(64)
        .flush_interval(Duration::from_millis(20))
        .build()
        .expect("client");

    let done = AtomicBool::new(false);
    let samples = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = 0u64;
            let mut last = client.stats();
            while !done.load(Ordering::Acquire) {
                let s = client.stats();
                assert!(s.scores.is_balanced(), "unbalanced snapshot: {s}");
                assert!(s.traces.is_balanced(), "unbalanced snapshot: {s}");
                for (now, before, what) in [
                    (s.scores.accepted, last.scores.accepted, "accepted"),
                    (s.scores.sent, last.scores.sent, "sent"),
                    (s.scores.retried, last.scores.retried, "retried"),
                    (
                        s.scores.dropped.total(),
                        last.scores.dropped.total(),
                        "dropped",
                    ),
                    (s.requests, last.requests, "requests"),
                ] {
                    assert!(now >= before, "{what} went backwards: {last} -> {s}");
                }
                last = s;
                samples += 1;
                // Sample continuously, but leave the cores to the producers and the worker.
                thread::yield_now();
            }
            samples
        });
        let producers: Vec<_> = (0..THREADS)
            .map(|t| {
                let client = &client;
                scope.spawn(move || score_batch(client, &format!("load-{t}"), PER_THREAD))
            })
            .collect();
        for p in producers {
            p.join().expect("producer thread");
        }
        client.flush(WAIT).expect("flush after load");
        done.store(true, Ordering::Release);
        sampler.join().expect("sampler thread")
    });
    assert!(samples > 10, "only {samples} samples");

    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(server.score_count() as u64, total);
    let failed = server.status_count(503) as u64;
    assert!(failed > 0, "the responder injected failures");
    let stats = client.stats();
    assert_accounted(&stats);
    assert_all_sent(&stats.traces, 0);
    assert_eq!(
        (
            stats.scores.accepted,
            stats.scores.sent,
            stats.scores.dropped.total()
        ),
        (total, total, 0),
        "{stats}"
    );
    assert_eq!(stats.scores.retried, failed, "one retry per injected 503");
    assert_eq!(stats.requests, total + failed);
    // The one-line summary says the same.
    let line = stats.to_string();
    for part in [
        format!("scores: accepted {total}, sent {total}, pending 0, retried {failed} (0 ambiguous), dropped 0"),
        format!("requests {}", total + failed),
    ] {
        assert!(line.contains(&part), "{line:?} lacks {part:?}");
    }
    client.shutdown(WAIT).expect("clean shutdown");
}

// ---------------------------------------------------------------------------------------------
// A full queue
// ---------------------------------------------------------------------------------------------

#[test]
fn queue_full_and_shut_down_errors_are_counted_and_validation_comes_first() {
    let server = lenient_server();
    let client = parked(client_for(&server))
        .max_queue_size(1)
        .build()
        .expect("client");

    client
        .score(Score::numeric(TRACE_ID, "queued", 0.5))
        .expect("room for one");
    let err = client
        .score(Score::numeric(TRACE_ID, "overflow", 0.5))
        .expect_err("a queue of one is full");
    assert_eq!(err, ScoreError::QueueFull);
    let message = err.to_string();
    assert!(
        message.contains("queue is full") && message.contains("dropped"),
        "{message}"
    );
    // An invalid score is refused for its content even when the queue is full, uncounted.
    assert_eq!(
        client.score(Score::new(TRACE_ID, "n", "2")),
        Err(ScoreError::InvalidNumeric("2".into()))
    );
    // The full queue woke the worker: the queued score may be on its way already.
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        (
            s.accepted,
            s.sent + s.pending,
            s.dropped.queue_full,
            s.dropped.total()
        ),
        (2, 1, 1, 1),
        "{s}"
    );

    client
        .shutdown(WAIT)
        .expect("shutdown drains the queued score");
    let err = client
        .score(Score::numeric(TRACE_ID, "late", 0.5))
        .expect_err("no scores after shutdown");
    assert_eq!(err, ScoreError::ShutDown);
    let message = err.to_string();
    assert!(
        message.contains("shut down") && message.contains("dropped"),
        "{message}"
    );
    // Validation still comes first after shutdown: an invalid score is not counted.
    assert_eq!(
        client.score(Score::categorical(TRACE_ID, "x\0", "")),
        Err(ScoreError::NulCharacter("name"))
    );

    let names: Vec<_> = server
        .scores()
        .into_iter()
        .map(|s| s.body["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("queued")]);
    assert_eq!(server.request_count(), 1);
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        (
            s.accepted,
            s.sent,
            s.dropped.queue_full,
            s.dropped.shutdown,
            s.dropped.total()
        ),
        (3, 1, 1, 1, 2),
        "{s}"
    );
}

#[test]
fn queue_full_accounting_with_a_parked_worker_is_exact() {
    const CALLS: u64 = 1_000;
    let server = lenient_server();
    let client = parked(client_for(&server))
        .max_queue_size(10)
        .build()
        .expect("client");
    let (mut ok, mut full, mut first_full) = (0u64, 0u64, None);
    for i in 0..CALLS {
        match client.score(Score::numeric(TRACE_ID, format!("q-{i}"), 0.5)) {
            Ok(()) => ok += 1,
            Err(ScoreError::QueueFull) => {
                full += 1;
                first_full.get_or_insert(i);
            }
            Err(e) => panic!("score {i}: unexpected {e}"),
        }
    }
    // Nothing drains a parked queue until it is full: it takes exactly 10. The first refusal
    // wakes the worker, which then drains while the rest of the loop races it.
    assert_eq!(
        first_full,
        Some(10),
        "a parked queue of 10 takes exactly 10"
    );
    assert_eq!(ok + full, CALLS);
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!((s.accepted, s.dropped.queue_full), (CALLS, full), "{s}");
    assert_eq!(s.sent + s.pending, ok, "nothing else is dropped: {s}");

    client.shutdown(WAIT).expect("shutdown delivers the rest");
    assert_eq!(server.score_count() as u64, ok);
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        (
            s.accepted,
            s.sent,
            s.pending,
            s.dropped.queue_full,
            s.dropped.total()
        ),
        (CALLS, ok, 0, full, full),
        "{s}"
    );
}

/// The server takes connections and never answers: the queue fills, `score()` keeps returning
/// `QueueFull` (it never waits), every refusal is counted, what is not refused is bounded by
/// the queue plus what the worker may hold, and shutdown abandons exactly that.
fn queue_full_under_a_hanging_server(queue: usize, in_flight: usize, calls: u64) {
    let server = hanging_server();
    let client = client_for(&server)
        .max_queue_size(queue)
        .max_in_flight(in_flight)
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let trace_id = Uuid::parse_str(TRACE_ID).expect("a UUID");
    let (mut ok, mut full) = (0u64, 0u64);
    for i in 0..calls {
        match client.score(Score::numeric(trace_id, "queue-full", 0.5)) {
            Ok(()) => ok += 1,
            Err(ScoreError::QueueFull) => full += 1,
            Err(e) => panic!("score {i}: unexpected {e}"),
        }
    }
    assert_eq!(ok + full, calls);
    // What the worker holds besides the queue (see `ClientBuilder::max_queue_size`).
    let held = (4 * in_flight)
        .max(2 * pandaprobe::DEFAULT_BATCH_SIZE)
        .max(1024)
        .min(queue.max(2 * in_flight));
    assert!(
        ok <= (queue + held) as u64,
        "{ok} taken with a queue of {queue} and {held} held"
    );
    assert!(
        ok >= queue as u64,
        "only {ok} taken: the queue never filled"
    );
    assert!(
        server.wait_for_requests(in_flight, WAIT),
        "the requests went out"
    );
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        (
            s.accepted,
            s.dropped.queue_full,
            s.dropped.total(),
            s.sent,
            s.pending
        ),
        (calls, full, full, 0, ok),
        "{s}"
    );
    assert_eq!(
        server.request_count(),
        in_flight,
        "max_in_flight requests hang, no more"
    );

    let timeout = Duration::from_secs(1);
    assert_eq!(
        common::timed_out(&client.shutdown(timeout)),
        Some((ok, timeout))
    );
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(s.pending, 0, "{s}");
    assert_eq!(abandoned(&s), ok, "{s}");
    assert_eq!(s.dropped.queue_full + abandoned(&s), calls, "{s}");
    assert_eq!(server.score_count(), 0);
}

#[test]
fn queue_full_under_a_hanging_server_one_request_in_flight() {
    queue_full_under_a_hanging_server(10, 1, 20_000);
}

#[test]
fn queue_full_under_a_hanging_server_default_in_flight() {
    queue_full_under_a_hanging_server(1_000, pandaprobe::DEFAULT_MAX_IN_FLIGHT, 100_000);
}

#[test]
fn block_policy_waits_its_bound_then_drops() {
    let block = Duration::from_millis(300);
    let server = hanging_server();
    let client = client_for(&server)
        .max_in_flight(1)
        .max_queue_size(1)
        .request_timeout(Duration::from_secs(60))
        .queue_full(QueueFullPolicy::Block(block))
        .build()
        .expect("client");
    // The worker takes records while it has room; once it holds its maximum, the queue of one
    // fills and a score waits `block` for room that never comes.
    let mut ok = 0u64;
    let mut waited = None;
    for i in 0..5_000 {
        let started = Instant::now();
        match client.score(Score::numeric(TRACE_ID, format!("block-{i}"), 0.5)) {
            Ok(()) => ok += 1,
            Err(ScoreError::QueueFull) => {
                waited = Some(started.elapsed());
                break;
            }
            Err(e) => panic!("score {i}: unexpected {e}"),
        }
    }
    let waited = waited.expect("the queue filled up");
    assert!(
        waited >= block,
        "gave up after {waited:?}, before {block:?}"
    );
    assert!(waited < block + Duration::from_secs(2), "waited {waited:?}");
    // Still full: the next one waits and drops too.
    let started = Instant::now();
    assert_eq!(
        client.score(Score::numeric(TRACE_ID, "again", 0.5)),
        Err(ScoreError::QueueFull)
    );
    assert!(started.elapsed() >= block);

    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        (
            s.accepted,
            s.pending,
            s.dropped.queue_full,
            s.dropped.total()
        ),
        (ok + 2, ok, 2, 2),
        "{s}"
    );
    let timeout = Duration::from_secs(1);
    assert_eq!(
        common::timed_out(&client.shutdown(timeout)),
        Some((ok, timeout))
    );
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        (s.pending, s.dropped.queue_full, abandoned(&s)),
        (0, 2, ok),
        "{s}"
    );
}

/// A full queue wakes the worker at once, even when the batch threshold can never be reached
/// (`batch_size` above `max_queue_size`) and the interval timer is far away.
#[test]
fn a_full_queue_wakes_the_worker_without_waiting_for_the_interval() {
    let server = lenient_server();
    let client = client_for(&server)
        .max_queue_size(10)
        .batch_size(1_000)
        .flush_interval(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut full = 0;
    for i in 0..11 {
        if client.score(Score::numeric(TRACE_ID, format!("full-{i}"), 0.5))
            == Err(ScoreError::QueueFull)
        {
            full += 1;
        }
    }
    assert_eq!(full, 1, "the eleventh score finds the queue full");
    // No flush: only the wake-up on the full queue can start delivery before the 60 s tick.
    assert!(
        server.wait_for_scores(10, WAIT),
        "the worker slept on a full queue: {} stored",
        server.score_count()
    );
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(s.dropped.queue_full, 1, "{s}");
}

/// `Duration::MAX` means "never" for every duration setting; none of them may overflow the
/// worker's clock arithmetic (a panic there would lose every record).
#[test]
fn endless_durations_do_not_break_the_worker() {
    let server = lenient_server();
    server.fail_next(2, Fault::Status(503));
    let client = client_for(&server)
        .flush_interval(Duration::MAX)
        .request_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .shutdown_timeout(Duration::MAX)
        .max_retry_after(Duration::MAX)
        .retry_backoff(Duration::from_millis(1), Duration::MAX)
        .retry_max_elapsed(Duration::MAX)
        .build()
        .expect("client");
    for i in 0..3 {
        client
            .score(Score::numeric(TRACE_ID, format!("endless-{i}"), 0.5))
            .expect("accepted");
    }
    client.flush(WAIT).expect("flush delivers");
    client
        .flush(Duration::MAX)
        .expect("a flush with no deadline");
    let stats = client.stats();
    assert_accounted(&stats);
    assert_all_sent(&stats.scores, 3);
    assert_eq!(stats.scores.retried, 2, "{stats}");
    assert_eq!(server.score_count(), 3);
    drop(client); // shuts down with an endless timeout: returns once drained
}

// ---------------------------------------------------------------------------------------------
// TLS behind a private certificate authority
// ---------------------------------------------------------------------------------------------

/// A private CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, chain PEM, key).
fn private_ca() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "pandaprobe test CA");
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf");
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[test]
fn a_server_behind_a_private_ca_is_reached_once_its_root_is_added() {
    let (ca, chain, key) = private_ca();
    let server = TestServer::builder()
        .lenient()
        .tls(chain, key)
        .start()
        .expect("TLS test server");
    assert!(server.url().starts_with("https://"), "{}", server.url());

    // Without the root: the handshake fails, and the score is dropped, not sent in clear.
    let drops = Drops::default();
    let untrusting = client_for(&server)
        .max_retries(1)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(10))
        .on_drop(drops.hook())
        .build()
        .expect("client");
    untrusting
        .score(Score::numeric(Uuid::new_v4(), "untrusted", 0.5))
        .expect("queued");
    assert!(untrusting.flush(WAIT).is_err(), "an unknown CA is refused");
    assert_eq!(server.score_count(), 0);
    let events = drops.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0]
            .message()
            .is_some_and(|m| m.contains("certificate")),
        "the reason names the certificate: {events:?}"
    );

    // With it: delivered.
    let client = client_for(&server)
        .add_root_certificate(&ca)
        .build()
        .expect("client");
    send_a_scored_trace(&client, "over-tls");
    client.flush(WAIT).expect("delivered over TLS");
    assert_eq!(server.score_count(), 1);
    assert_eq!(server.trace_count(), 1);
}

/// Ends a trace with one score held for it: two records, one of each path.
fn send_a_scored_trace(client: &Client, name: &str) {
    let trace = client.start_trace(name);
    let score = Score::numeric(trace.trace_id(), name, 0.5);
    trace.score(score).expect("held");
    trace.end();
}

#[test]
fn a_root_certificate_or_proxy_that_cannot_be_used_is_refused_by_build() {
    let err = Client::builder()
        .api_key("k")
        .project_name("p")
        .add_root_certificate("not a certificate")
        .build()
        .expect_err("refused");
    assert!(err.to_string().contains("root_certificate"), "{err}");
    let err = Client::builder()
        .api_key("k")
        .project_name("p")
        .proxy("http://user:s3cret@[bad")
        .build()
        .expect_err("refused");
    let text = format!("{err} {err:?}");
    assert!(text.contains("proxy") && !text.contains("s3cret"), "{text}");
}

#[test]
fn configure_http_adds_to_the_http_client_and_the_sdks_own_settings_hold() {
    // The endpoint's host exists only in the client's own resolver; the user's headers reach
    // the server, but a user header cannot replace the API key.
    let server = lenient_server();
    let addr: std::net::SocketAddr = server
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    let client = Client::builder()
        .api_key(server.api_key())
        .project_name(PROJECT)
        .endpoint(format!("http://pandaprobe.internal:{}", addr.port()))
        .configure_http(move |http| {
            let mut headers = pandaprobe::reqwest::header::HeaderMap::new();
            headers.insert("x-gateway", "team-a".parse().expect("a header value"));
            headers.insert("x-api-key", "not-the-key".parse().expect("a header value"));
            http.resolve("pandaprobe.internal", addr)
                .default_headers(headers)
        })
        .build()
        .expect("client");
    send_a_scored_trace(&client, "configured");
    client
        .flush(WAIT)
        .expect("delivered through the resolved address");
    assert_eq!((server.trace_count(), server.score_count()), (1, 1));
    // The trace, the score, and any question whether the trace is stored.
    for request in &server.requests() {
        assert_eq!(request.header("x-gateway"), Some("team-a"));
        assert_eq!(request.header("x-api-key"), Some(server.api_key()));
    }
}

#[test]
fn a_configure_http_that_panics_fails_build_with_a_worker_error() {
    let err = Client::builder()
        .api_key("k")
        .project_name("p")
        .configure_http(|_| panic!("a bug in the user's settings"))
        .build()
        .expect_err("refused");
    assert!(matches!(err, ConfigError::Worker { .. }), "{err:?}");
    assert!(err.to_string().contains("configure_http"), "{err}");
}

#[test]
fn an_explicit_proxy_carries_every_request() {
    // The test server acts as the proxy: it routes a proxied request (absolute URI) by its
    // path. The endpoint's host does not exist, so only the proxy can deliver.
    let proxy = lenient_server();
    let client = Client::builder()
        .api_key(proxy.api_key())
        .project_name(PROJECT)
        .endpoint("http://pandaprobe.invalid")
        .proxy(proxy.url())
        .build()
        .expect("client");
    send_a_scored_trace(&client, "via-proxy");
    client.flush(WAIT).expect("delivered through the proxy");
    assert_eq!(proxy.trace_count(), 1);
    assert_eq!(proxy.score_count(), 1);
}
