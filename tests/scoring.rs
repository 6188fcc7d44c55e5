//! Integration tests of the scoring SDK against the in-process `TestServer` on 127.0.0.1:
//! wire format, validation, the flush and shutdown guarantees, queue-full accounting, retries,
//! runtimes, and the stats identity.
//!
//! Run with `cargo test --test scoring`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pandaprobe::testing::{Fault, TestServer, SCORES_PATH};
use pandaprobe::{
    Client, ClientBuilder, FlushError, QueueFullPolicy, Score, ScoreDataType, ScoreError, Stats,
};
use serde_json::{json, Value};
use uuid::Uuid;

const PROJECT: &str = "scoring-tests";
const TRACE: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
/// An upper bound for flushes that are expected to succeed; never reached when the SDK works.
const LONG: Duration = Duration::from_secs(30);

fn start_server() -> TestServer {
    TestServer::start().expect("start the test server")
}

/// A client for `server` with fast retries, so that no test waits on production backoffs.
fn builder(server: &TestServer) -> ClientBuilder {
    Client::builder()
        .api_key(server.api_key())
        .project_name(PROJECT)
        .endpoint(server.url())
        .request_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .max_retry_after(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(10))
}

/// Records stay in the queue until a flush or shutdown: the batch threshold is never reached
/// and the interval timer never fires during a test.
fn parked(b: ClientBuilder) -> ClientBuilder {
    b.batch_size(1_000_000)
        .flush_interval(Duration::from_secs(3600))
}

/// The score counters, for one readable `assert_eq!` per test.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    accepted: u64,
    sent: u64,
    pending: u64,
    queue_full: u64,
    rejected: u64,
    retries_exhausted: u64,
    shutdown: u64,
}

impl Counts {
    fn of(stats: &Stats) -> Counts {
        let s = &stats.scores;
        Counts {
            accepted: s.accepted,
            sent: s.sent,
            pending: s.pending,
            queue_full: s.dropped.queue_full,
            rejected: s.dropped.rejected,
            retries_exhausted: s.dropped.retries_exhausted,
            shutdown: s.dropped.shutdown,
        }
    }
}

/// The identity for scores and traces, and no trace activity (these tests send only scores).
fn assert_balanced(stats: &Stats) {
    assert!(stats.scores.is_balanced(), "scores unbalanced: {stats:?}");
    assert!(stats.traces.is_balanced(), "traces unbalanced: {stats:?}");
    assert_eq!(stats.traces.accepted, 0, "no trace was sent: {stats:?}");
}

fn body_text(body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).expect("request body is UTF-8")
}

// -------------------------------------------------------------------------------------------
// 1. Wire format
// -------------------------------------------------------------------------------------------

#[test]
fn bodies_and_headers_match_the_contract_for_each_data_type() {
    let server = start_server();
    let client = builder(&server).build().expect("build client");
    let uuid = Uuid::parse_str(TRACE).expect("TRACE is a UUID");
    let t = TRACE;
    let scores = vec![
        // The contract's two byte-exact examples from the Python SDK.
        (
            Score::new(t, "accuracy", "0.85")
                .reason("close enough")
                .metadata(json!({"judge": "unit"})),
            format!(
                r#"{{"trace_id":"{t}","name":"accuracy","value":"0.85","data_type":"NUMERIC","source":"PROGRAMMATIC","reason":"close enough","metadata":{{"judge":"unit"}}}}"#
            ),
        ),
        (
            Score::new(t, "verdict", "PASS").data_type(ScoreDataType::Categorical),
            format!(
                r#"{{"trace_id":"{t}","name":"verdict","value":"PASS","data_type":"CATEGORICAL","source":"PROGRAMMATIC"}}"#
            ),
        ),
        // NUMERIC as text, with a reason and no metadata.
        (
            Score::new(t, "user_satisfaction", "0.9").reason("User clicked thumbs up"),
            format!(
                r#"{{"trace_id":"{t}","name":"user_satisfaction","value":"0.9","data_type":"NUMERIC","source":"PROGRAMMATIC","reason":"User clicked thumbs up"}}"#
            ),
        ),
        // NUMERIC from a float, trace id as a Uuid.
        (
            Score::numeric(uuid, "relevance", 0.9),
            format!(
                r#"{{"trace_id":"{t}","name":"relevance","value":"0.9","data_type":"NUMERIC","source":"PROGRAMMATIC"}}"#
            ),
        ),
        (
            Score::numeric(uuid, "lower_bound", 0.0),
            format!(
                r#"{{"trace_id":"{t}","name":"lower_bound","value":"0","data_type":"NUMERIC","source":"PROGRAMMATIC"}}"#
            ),
        ),
        // BOOLEAN, typed and relabelled text (sent in lower case).
        (
            Score::boolean(t, "hallucination_free", true),
            format!(
                r#"{{"trace_id":"{t}","name":"hallucination_free","value":"true","data_type":"BOOLEAN","source":"PROGRAMMATIC"}}"#
            ),
        ),
        (
            Score::boolean(t, "toxic", false),
            format!(
                r#"{{"trace_id":"{t}","name":"toxic","value":"false","data_type":"BOOLEAN","source":"PROGRAMMATIC"}}"#
            ),
        ),
        (
            Score::new(t, "relabelled", "TRUE").data_type(ScoreDataType::Boolean),
            format!(
                r#"{{"trace_id":"{t}","name":"relabelled","value":"true","data_type":"BOOLEAN","source":"PROGRAMMATIC"}}"#
            ),
        ),
        // CATEGORICAL with reason and nested metadata; with metadata only.
        (
            Score::categorical(t, "sentiment", "positive")
                .reason("tone")
                .metadata(json!({"judge": "v2", "n": 1, "nested": {"a": [1, 2]}})),
            format!(
                r#"{{"trace_id":"{t}","name":"sentiment","value":"positive","data_type":"CATEGORICAL","source":"PROGRAMMATIC","reason":"tone","metadata":{{"judge":"v2","n":1,"nested":{{"a":[1,2]}}}}}}"#
            ),
        ),
        (
            Score::categorical(t, "label", "B").metadata(json!({"k": "v"})),
            format!(
                r#"{{"trace_id":"{t}","name":"label","value":"B","data_type":"CATEGORICAL","source":"PROGRAMMATIC","metadata":{{"k":"v"}}}}"#
            ),
        ),
        // A trace id given in upper case or without hyphens is sent in the canonical form.
        (
            Score::numeric(t.to_uppercase(), "upper_case_id", 0.5),
            format!(
                r#"{{"trace_id":"{t}","name":"upper_case_id","value":"0.5","data_type":"NUMERIC","source":"PROGRAMMATIC"}}"#
            ),
        ),
        (
            Score::numeric(t.replace('-', ""), "simple_id", 1.0),
            format!(
                r#"{{"trace_id":"{t}","name":"simple_id","value":"1","data_type":"NUMERIC","source":"PROGRAMMATIC"}}"#
            ),
        ),
    ];
    let n = scores.len();
    let mut expected: HashMap<String, String> = HashMap::new();
    for (score, body) in scores {
        let name = score.name().to_owned();
        client.score(score).expect("valid score is accepted");
        assert!(expected.insert(name, body).is_none(), "names are unique");
    }
    client.flush(LONG).expect("flush delivers every score");

    let requests = server.requests();
    assert_eq!(requests.len(), n, "one request per score, no retries");
    let user_agent = format!("pandaprobe-rust/{}", env!("CARGO_PKG_VERSION"));
    let mut request_ids = HashSet::new();
    for req in &requests {
        let body = body_text(&req.body);
        let name = req
            .json()
            .and_then(|v| v["name"].as_str().map(str::to_owned))
            .expect("body is JSON with a name");
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
        assert_eq!(
            req.header("content-encoding"),
            None,
            "bodies are never compressed"
        );
        let request_id = req.request_id().expect("X-Request-ID is sent");
        Uuid::parse_str(request_id).expect("X-Request-ID is a UUID");
        assert!(
            request_ids.insert(request_id.to_owned()),
            "X-Request-ID unique per record"
        );
    }
    assert!(expected.is_empty(), "never received: {:?}", expected.keys());
    assert_eq!(server.score_count(), n);

    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: n as u64,
            sent: n as u64,
            ..Counts::default()
        }
    );
    assert_eq!(stats.scores.retried, 0);
    assert_eq!(stats.requests, n as u64);
    client.shutdown(LONG).expect("clean shutdown");
}

/// Values at the edges of the server's rules pass validation and are stored (201), never
/// answered 422 or 500.
#[test]
fn edge_values_the_server_accepts_are_delivered() {
    let server = start_server();
    let client = builder(&server).build().expect("build client");
    let t = TRACE;
    let edge = [
        Score::new(t, "x".repeat(255), "0.5"),
        Score::new(t, "é".repeat(255), "0.5"),
        Score::categorical(t, "long_value", "v".repeat(255)),
        Score::categorical(t, "multibyte_value", "ü".repeat(255)),
        Score::new(t, "zero", "0"),
        Score::new(t, "one", "1"),
        Score::new(t, "exponent", "1e-1"),
        Score::numeric(t, "one_float", 1.0),
        Score::numeric(t, "tiny", 1e-7),
        Score::new(t, "mixed_case", "FaLsE").data_type(ScoreDataType::Boolean),
        Score::categorical(t, "empty_metadata", "x").metadata(json!({})),
        Score::new(Uuid::nil(), "nil_trace", "0.5"),
    ];
    let n = edge.len();
    for score in edge {
        let name = score.name().chars().take(20).collect::<String>();
        client
            .score(score)
            .unwrap_or_else(|e| panic!("{name}: valid score refused: {e}"));
    }
    client.flush(LONG).expect("flush");
    assert_eq!(server.status_count(201), n, "{:?}", server.requests());
    assert_eq!(server.request_count(), n);
    let mixed = server
        .scores()
        .into_iter()
        .find(|s| s.body["name"] == "mixed_case")
        .expect("mixed_case stored");
    assert_eq!(mixed.body["value"], "false");
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: n as u64,
            sent: n as u64,
            ..Counts::default()
        }
    );
}

// -------------------------------------------------------------------------------------------
// 2. ScoreError
// -------------------------------------------------------------------------------------------

#[test]
fn every_invalid_score_is_refused_at_the_call_and_nothing_is_sent() {
    let server = start_server();
    let client = builder(&server).build().expect("build client");
    let t = TRACE;
    // (score, expected error, fragments its message must contain)
    let cases: Vec<(Score, ScoreError, &[&str])> = vec![
        (
            Score::new("not-a-uuid", "n", "0.5"),
            ScoreError::InvalidTraceId("not-a-uuid".into()),
            &["not-a-uuid", "UUID"],
        ),
        (
            Score::numeric(String::new(), "n", 0.5),
            ScoreError::InvalidTraceId(String::new()),
            &["UUID"],
        ),
        (
            Score::new(t, "", "0.5"),
            ScoreError::EmptyName,
            &["name", "empty"],
        ),
        (
            Score::new(t, "n".repeat(256), "0.5"),
            ScoreError::NameTooLong(256),
            &["name", "256", "255"],
        ),
        (
            Score::new(t, "é".repeat(256), "0.5"),
            ScoreError::NameTooLong(256),
            &["256", "255"],
        ),
        (
            Score::categorical(t, "n", "v".repeat(300)),
            ScoreError::ValueTooLong(300),
            &["value", "300", "255"],
        ),
        (
            Score::new(t, "n", "1.5"),
            ScoreError::InvalidNumeric("1.5".into()),
            &["NUMERIC", "1.5", "between 0 and 1"],
        ),
        (
            Score::numeric(t, "n", 1.5),
            ScoreError::InvalidNumeric("1.5".into()),
            &["1.5", "between 0 and 1"],
        ),
        (
            Score::numeric(t, "n", -0.1),
            ScoreError::InvalidNumeric("-0.1".into()),
            &["-0.1"],
        ),
        (
            Score::new(t, "n", "nan"),
            ScoreError::InvalidNumeric("nan".into()),
            &["nan", "finite"],
        ),
        (
            Score::numeric(t, "n", f64::NAN),
            ScoreError::InvalidNumeric("NaN".into()),
            &["NaN", "finite"],
        ),
        (
            Score::numeric(t, "n", f64::INFINITY),
            ScoreError::InvalidNumeric("inf".into()),
            &["inf"],
        ),
        (
            Score::new(t, "n", "abc"),
            ScoreError::InvalidNumeric("abc".into()),
            &["abc", "number"],
        ),
        (
            Score::new(t, "n", ""),
            ScoreError::InvalidNumeric(String::new()),
            &["NUMERIC"],
        ),
        (
            Score::boolean(t, "n", true).data_type(ScoreDataType::Numeric),
            ScoreError::InvalidNumeric("true".into()),
            &["true"],
        ),
        (
            Score::new(t, "n", "yes").data_type(ScoreDataType::Boolean),
            ScoreError::InvalidBoolean("yes".into()),
            &["BOOLEAN", "yes", "true or false"],
        ),
        (
            Score::categorical(t, "n", ""),
            ScoreError::EmptyCategorical,
            &["CATEGORICAL", "empty"],
        ),
        (
            Score::categorical(t, "n", "x").metadata(json!([1, 2])),
            ScoreError::MetadataNotObject("an array"),
            &["metadata", "JSON object", "array"],
        ),
        (
            Score::categorical(t, "n", "x").metadata(Value::Null),
            ScoreError::MetadataNotObject("null"),
            &["metadata", "JSON object", "null"],
        ),
        (
            Score::numeric(t, "n", 0.5).metadata(json!(42)),
            ScoreError::MetadataNotObject("a number"),
            &["JSON object", "number"],
        ),
        (
            Score::numeric(t, "n", 0.5).metadata(json!("text")),
            ScoreError::MetadataNotObject("a string"),
            &["JSON object", "string"],
        ),
        (
            Score::numeric(t, "n", 0.5).metadata(json!(true)),
            ScoreError::MetadataNotObject("a boolean"),
            &["JSON object", "boolean"],
        ),
    ];
    for (score, expected, fragments) in cases {
        let described = format!("{score:?}");
        let err = client
            .score(score)
            .expect_err(&format!("invalid score accepted: {described}"));
        assert_eq!(err, expected, "{described}");
        let message = err.to_string();
        for fragment in fragments {
            assert!(
                message.contains(fragment),
                "message {message:?} lacks {fragment:?} ({described})"
            );
        }
        // A std::error::Error a caller can box and propagate with `?`.
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
        assert_eq!(boxed.to_string(), message);
    }

    client.flush(LONG).expect("flush with nothing queued");
    assert_eq!(
        server.request_count(),
        0,
        "an invalid score reached the server"
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts::default(),
        "invalid scores are not counted"
    );
    assert_eq!(stats.requests, 0);
    client.shutdown(LONG).expect("clean shutdown");
    assert_eq!(server.request_count(), 0, "shutdown sent nothing either");
}

#[test]
fn queue_full_and_shut_down_errors_are_counted() {
    let server = start_server();
    let client = parked(builder(&server))
        .max_queue_size(1)
        .build()
        .expect("build client");

    client
        .score(Score::numeric(TRACE, "queued", 0.5))
        .expect("room for one");
    let err = client
        .score(Score::numeric(TRACE, "overflow", 0.5))
        .expect_err("queue of one is full");
    assert_eq!(err, ScoreError::QueueFull);
    let message = err.to_string();
    assert!(
        message.contains("queue is full") && message.contains("dropped"),
        "{message}"
    );
    // An invalid score is refused for its content even when the queue is full, uncounted.
    assert_eq!(
        client.score(Score::new(TRACE, "", "0.5")),
        Err(ScoreError::EmptyName)
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 2,
            pending: 1,
            queue_full: 1,
            ..Counts::default()
        }
    );

    client
        .shutdown(LONG)
        .expect("shutdown drains the queued score");
    let err = client
        .score(Score::numeric(TRACE, "late", 0.5))
        .expect_err("no scores after shutdown");
    assert_eq!(err, ScoreError::ShutDown);
    let message = err.to_string();
    assert!(
        message.contains("shut down") && message.contains("dropped"),
        "{message}"
    );
    // Validation still comes first after shutdown: an invalid score is not counted.
    assert_eq!(
        client.score(Score::categorical(TRACE, "x", "")),
        Err(ScoreError::EmptyCategorical)
    );

    let names: Vec<Value> = server
        .scores()
        .into_iter()
        .map(|s| s.body["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("queued")]);
    assert_eq!(server.request_count(), 1);
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 3,
            sent: 1,
            queue_full: 1,
            shutdown: 1,
            ..Counts::default()
        }
    );
}

// -------------------------------------------------------------------------------------------
// 3. Flush guarantee
// -------------------------------------------------------------------------------------------

#[test]
fn flush_covers_every_score_of_each_producer_thread() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2_000;
    let server = start_server();
    let client = builder(&server)
        .batch_size(50)
        .flush_interval(Duration::from_millis(200))
        .build()
        .expect("build client");

    thread::scope(|scope| {
        for t in 0..THREADS {
            let client = client.clone();
            let server = &server;
            scope.spawn(move || {
                let name = format!("producer-{t}");
                for seq in 0..PER_THREAD {
                    client
                        .score(
                            Score::numeric(TRACE, name.clone(), 0.5)
                                .metadata(json!({"thread": t, "seq": seq})),
                        )
                        .unwrap_or_else(|e| panic!("thread {t} score {seq}: {e}"));
                }
                client
                    .flush(LONG)
                    .unwrap_or_else(|e| panic!("thread {t}: flush failed: {e}"));
                // Every score this thread made before its flush is on the server now.
                let mine: HashSet<u64> = server
                    .scores()
                    .iter()
                    .filter(|s| s.body["name"] == name.as_str())
                    .filter_map(|s| s.body["metadata"]["seq"].as_u64())
                    .collect();
                assert_eq!(mine.len(), PER_THREAD, "thread {t} after its own flush");
            });
        }
    });

    client.flush(LONG).expect("final flush");
    let stored = server.scores();
    assert_eq!(stored.len(), THREADS * PER_THREAD, "no loss, no duplicate");
    let mut seen = HashSet::new();
    for s in &stored {
        let key = (
            s.body["metadata"]["thread"]
                .as_u64()
                .expect("thread in metadata"),
            s.body["metadata"]["seq"].as_u64().expect("seq in metadata"),
        );
        assert!(seen.insert(key), "duplicate score {key:?}");
    }
    let total = (THREADS * PER_THREAD) as u64;
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: total,
            sent: total,
            ..Counts::default()
        }
    );
    assert_eq!(stats.requests, total);
    client.shutdown(LONG).expect("clean shutdown");
}

// -------------------------------------------------------------------------------------------
// 4. Shutdown drains
// -------------------------------------------------------------------------------------------

#[test]
fn shutdown_drains_the_queue_and_is_idempotent() {
    const N: usize = 300;
    let server = start_server();
    let client = parked(builder(&server)).build().expect("build client");
    for i in 0..N {
        client
            .score(Score::numeric(TRACE, format!("drain-{i}"), 0.25))
            .expect("accepted");
    }
    let stats = client.stats();
    assert_eq!(stats.scores.pending, N as u64, "records wait in the queue");
    assert_eq!(
        server.request_count(),
        0,
        "a parked worker has sent nothing yet"
    );

    let started = Instant::now();
    client.shutdown(LONG).expect("shutdown delivers everything");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert_eq!(server.score_count(), N, "every queued score delivered");
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: N as u64,
            sent: N as u64,
            ..Counts::default()
        }
    );

    // Idempotent: the same outcome again, at once, from any clone.
    let clone = client.clone();
    let started = Instant::now();
    assert_eq!(clone.shutdown(LONG), Ok(()));
    assert_eq!(client.shutdown(Duration::from_millis(1)), Ok(()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "repeated shutdown is immediate"
    );
    assert_eq!(client.flush(LONG), Err(FlushError::ShutDown));

    assert_eq!(
        clone.score(Score::numeric(TRACE, "after", 0.5)),
        Err(ScoreError::ShutDown)
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: N as u64 + 1,
            sent: N as u64,
            shutdown: 1,
            ..Counts::default()
        }
    );
    assert_eq!(server.score_count(), N);
}

// -------------------------------------------------------------------------------------------
// 5. Dropping the last handle; the global client
// -------------------------------------------------------------------------------------------

#[test]
fn dropping_the_last_handle_delivers() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250;
    let server = start_server();
    let client = parked(builder(&server)).build().expect("build client");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    client
                        .score(Score::numeric(TRACE, format!("dropped-{t}-{i}"), 0.5))
                        .expect("accepted");
                }
                // The clone is dropped here, with records still queued.
            })
        })
        .collect();
    for h in handles {
        h.join().expect("producer thread");
    }
    let stats = client.stats();
    assert_balanced(&stats);
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: total,
            pending: total,
            ..Counts::default()
        }
    );
    assert_eq!(server.request_count(), 0, "still parked before the drop");

    let started = Instant::now();
    drop(client); // the last handle: shuts down with the configured shutdown_timeout
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "drop took {took:?}");
    // The drop returned after the worker finished: everything is on the server already.
    assert_eq!(server.score_count(), THREADS * PER_THREAD);
    assert_eq!(server.status_count(201), THREADS * PER_THREAD);
}

/// All of the process-wide API lives in this one test so that parallel tests cannot interfere.
#[test]
fn global_client_guard_delivers_and_scoring_without_a_client_is_a_noop() {
    let server = start_server();

    // No global client: everything is a no-op that succeeds.
    assert!(pandaprobe::client().is_none());
    assert_eq!(
        pandaprobe::score(Score::numeric(TRACE, "nobody", 0.5)),
        Ok(())
    );
    assert_eq!(pandaprobe::score(Score::new("not-a-uuid", "", "")), Ok(()));
    assert_eq!(pandaprobe::flush(LONG), Ok(()));
    assert_eq!(pandaprobe::shutdown(LONG), Ok(()));

    let client = parked(builder(&server)).build().expect("build client");
    let observer = client.clone();
    let guard = pandaprobe::init(client);
    assert!(pandaprobe::client().is_some());
    for i in 0..10 {
        pandaprobe::score(Score::numeric(TRACE, format!("global-{i}"), 0.5)).expect("accepted");
    }
    assert_eq!(
        pandaprobe::score(Score::new(TRACE, "bad", "2")),
        Err(ScoreError::InvalidNumeric("2".into())),
        "the global client validates"
    );
    pandaprobe::flush(LONG).expect("global flush");
    assert_eq!(
        server.score_count(),
        10,
        "flushed through the global client"
    );

    for i in 0..20 {
        pandaprobe::score(Score::numeric(TRACE, format!("at-exit-{i}"), 0.5)).expect("accepted");
    }
    assert_eq!(guard.client().stats().scores.pending, 20);
    assert_eq!(server.score_count(), 10, "parked until the guard drops");
    drop(guard);
    assert_eq!(server.score_count(), 30, "the guard delivered at drop");

    // The guard shut the client down (every handle) and cleared the global slot.
    assert!(pandaprobe::client().is_none());
    assert_eq!(
        pandaprobe::score(Score::numeric(TRACE, "after", 0.5)),
        Ok(())
    );
    let stats = observer.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 30,
            sent: 30,
            ..Counts::default()
        }
    );
    assert_eq!(
        observer.score(Score::numeric(TRACE, "late", 0.5)),
        Err(ScoreError::ShutDown)
    );
    assert_eq!(server.score_count(), 30);
}

// -------------------------------------------------------------------------------------------
// 6. Queue-full accounting
// -------------------------------------------------------------------------------------------

#[test]
fn queue_full_accounting_with_a_parked_worker_is_exact() {
    let server = start_server();
    let client = parked(builder(&server))
        .max_queue_size(10)
        .build()
        .expect("build client");
    let mut ok = 0u64;
    let mut full = 0u64;
    let mut first_full = None;
    for i in 0..1_000 {
        match client.score(Score::numeric(TRACE, format!("q-{i}"), 0.5)) {
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
    assert_eq!(ok + full, 1_000);
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        (stats.scores.accepted, stats.scores.dropped.queue_full),
        (1_000, full),
        "every refusal is counted, and nothing else is dropped: {stats:?}"
    );
    assert_eq!(stats.scores.sent + stats.scores.pending, ok, "{stats:?}");

    client.shutdown(LONG).expect("shutdown delivers the rest");
    assert_eq!(server.score_count() as u64, ok);
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 1_000,
            sent: ok,
            queue_full: full,
            ..Counts::default()
        }
    );
}

#[test]
fn queue_full_accounting_with_a_hanging_server() {
    const N: u64 = 3_000;
    let server = start_server();
    server.set_responder(|_| Some(Fault::Hang));
    let client = builder(&server)
        .max_in_flight(1)
        .max_queue_size(10)
        .batch_size(5)
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("build client");
    let mut full = 0u64;
    for i in 0..N {
        match client.score(Score::numeric(TRACE, format!("hang-{i}"), 0.5)) {
            Ok(()) => {}
            Err(ScoreError::QueueFull) => full += 1,
            Err(e) => panic!("score {i}: unexpected {e}"),
        }
    }
    assert!(
        server.wait_for_requests(1, LONG),
        "the first request reached the server"
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(stats.scores.accepted, N);
    assert_eq!(
        stats.scores.dropped.queue_full, full,
        "every QueueFull error is counted"
    );
    assert_eq!(stats.scores.sent, 0, "nothing answered");
    assert_eq!(stats.scores.pending, N - full);
    // The queue (10) plus what the worker holds (at most 1024 here) bound what is not dropped.
    assert!(full >= N - 10 - 1024, "only {full} dropped of {N}");
    assert_eq!(
        server.request_count(),
        1,
        "max_in_flight(1): one hanging request"
    );

    let started = Instant::now();
    let result = client.shutdown(Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_millis(1_300),
        "{:?}",
        started.elapsed()
    );
    let abandoned = N - full;
    assert_eq!(
        result,
        Err(FlushError::Timeout {
            pending: abandoned,
            timeout: Duration::from_millis(300)
        })
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: N,
            queue_full: full,
            shutdown: abandoned,
            ..Counts::default()
        }
    );
    assert_eq!(server.score_count(), 0);
}

#[test]
fn queue_full_block_policy_waits_then_drops() {
    let block = Duration::from_millis(200);
    let server = start_server();
    server.set_responder(|_| Some(Fault::Hang));
    let client = builder(&server)
        .max_in_flight(1)
        .max_queue_size(1)
        .request_timeout(Duration::from_secs(60))
        .queue_full(QueueFullPolicy::Block(block))
        .build()
        .expect("build client");
    // The worker takes records while it has room; once it holds its maximum, the queue of one
    // fills and a score waits `block` for room that never comes.
    let mut ok = 0u64;
    let mut waited = None;
    for i in 0..20_000 {
        let started = Instant::now();
        match client.score(Score::numeric(TRACE, format!("block-{i}"), 0.5)) {
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
        waited >= block * 9 / 10,
        "gave up after {waited:?}, before {block:?}"
    );
    assert!(waited < block + Duration::from_secs(2), "waited {waited:?}");
    // Still full: the next one waits and drops too.
    let started = Instant::now();
    assert_eq!(
        client.score(Score::numeric(TRACE, "again", 0.5)),
        Err(ScoreError::QueueFull)
    );
    assert!(started.elapsed() >= block * 9 / 10);

    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: ok + 2,
            pending: ok,
            queue_full: 2,
            ..Counts::default()
        }
    );
    let result = client.shutdown(Duration::from_millis(200));
    assert_eq!(
        result,
        Err(FlushError::Timeout {
            pending: ok,
            timeout: Duration::from_millis(200)
        })
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: ok + 2,
            queue_full: 2,
            shutdown: ok,
            ..Counts::default()
        }
    );
}

// -------------------------------------------------------------------------------------------
// 7. Retries
// -------------------------------------------------------------------------------------------

/// One score whose first attempt meets `fault`: it is retried once and delivered.
fn retried_once(fault: Fault, first_status: Option<u16>, ambiguous: u64) {
    let server = start_server();
    server.fail_next_on(SCORES_PATH, 1, fault.clone());
    let client = builder(&server).build().expect("build client");
    client
        .score(Score::numeric(TRACE, "retried", 0.5).reason("r"))
        .expect("accepted");
    client
        .flush(LONG)
        .unwrap_or_else(|e| panic!("{fault:?}: flush: {e}"));

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        2,
        "{fault:?}: one failure, one retry: {requests:?}"
    );
    assert_eq!(requests[0].status, first_status, "{fault:?}");
    assert_eq!(requests[0].fault.as_ref(), Some(&fault));
    assert_eq!(
        requests[1].status,
        Some(201),
        "{fault:?}: the retry is stored"
    );
    let first_id = requests[0]
        .request_id()
        .expect("X-Request-ID on the first attempt");
    Uuid::parse_str(first_id).expect("X-Request-ID is a UUID");
    assert_eq!(
        requests[1].request_id(),
        Some(first_id),
        "{fault:?}: same X-Request-ID"
    );
    assert_eq!(requests[0].body, requests[1].body, "{fault:?}: same body");
    assert_eq!(server.score_count(), 1);

    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 1,
            sent: 1,
            ..Counts::default()
        },
        "{fault:?}"
    );
    assert_eq!(stats.scores.retried, 1, "{fault:?}");
    assert_eq!(stats.scores.ambiguous, ambiguous, "{fault:?}");
    assert_eq!(stats.requests, 2, "{fault:?}");
    client.shutdown(LONG).expect("clean shutdown");
}

#[test]
fn retries_408() {
    retried_once(Fault::Status(408), Some(408), 0);
}

#[test]
fn retries_429_without_retry_after() {
    retried_once(Fault::Status(429), Some(429), 0);
}

#[test]
fn retries_500() {
    retried_once(Fault::Status(500), Some(500), 0);
}

#[test]
fn retries_502() {
    retried_once(Fault::Status(502), Some(502), 0);
}

#[test]
fn retries_503() {
    retried_once(Fault::Status(503), Some(503), 0);
}

#[test]
fn retries_504() {
    retried_once(Fault::Status(504), Some(504), 0);
}

#[test]
fn retries_a_reset_and_counts_it_ambiguous() {
    retried_once(Fault::Reset, None, 1);
}

/// The server closes the kept-alive connection after a 500: the retry, and the records after
/// it, go out on working connections without extra failures.
#[test]
fn after_a_500_the_retry_and_later_records_use_working_connections() {
    let server = start_server();
    let client = builder(&server)
        .max_in_flight(1)
        .build()
        .expect("build client");
    for i in 0..3 {
        client
            .score(Score::numeric(TRACE, format!("warm-{i}"), 0.5))
            .expect("accepted");
    }
    client
        .flush(LONG)
        .expect("warm-up flush: a kept-alive connection exists");

    server.fail_next(1, Fault::Status(500));
    client
        .score(Score::numeric(TRACE, "after-500", 0.5))
        .expect("accepted");
    client
        .flush(LONG)
        .expect("the retry after the 500 is delivered");
    for i in 0..3 {
        client
            .score(Score::numeric(TRACE, format!("later-{i}"), 0.5))
            .expect("accepted");
    }
    client.flush(LONG).expect("later records delivered");

    let statuses: Vec<Option<u16>> = server.requests().iter().map(|r| r.status).collect();
    let mut expected = vec![Some(201); 3];
    expected.extend([Some(500), Some(201)]);
    expected.extend(vec![Some(201); 3]);
    assert_eq!(statuses, expected, "exactly one failed attempt");
    assert_eq!(server.score_count(), 7);
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 7,
            sent: 7,
            ..Counts::default()
        }
    );
    assert_eq!(stats.scores.retried, 1, "no attempt met a closed socket");
    assert_eq!(stats.scores.ambiguous, 0);
    client.shutdown(LONG).expect("clean shutdown");
}

// -------------------------------------------------------------------------------------------
// 8. No retry on 401 / 422
// -------------------------------------------------------------------------------------------

fn rejected_once(server: &TestServer, client: &Client, status: u16) {
    client
        .score(Score::numeric(TRACE, "rejected", 0.5))
        .expect("accepted");
    client
        .flush(LONG)
        .expect("flush: a rejected record has reached its outcome");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{status}: not retried: {requests:?}");
    assert_eq!(requests[0].status, Some(status));
    assert_eq!(server.score_count(), 0);
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 1,
            rejected: 1,
            ..Counts::default()
        },
        "{status}"
    );
    assert_eq!(stats.scores.retried, 0);
    assert_eq!(stats.requests, 1);
    client.shutdown(LONG).expect("clean shutdown");
    assert_eq!(
        server.request_count(),
        1,
        "{status}: nothing more at shutdown"
    );
}

#[test]
fn no_retry_on_401() {
    let server = start_server();
    let client = builder(&server)
        .api_key("sk_pp_wrong_key")
        .build()
        .expect("build client");
    rejected_once(&server, &client, 401);
}

#[test]
fn no_retry_on_422() {
    let server = start_server();
    server.fail_next(1, Fault::Status(422));
    let client = builder(&server).build().expect("build client");
    rejected_once(&server, &client, 422);
}

// -------------------------------------------------------------------------------------------
// 9. Runtimes
// -------------------------------------------------------------------------------------------

fn score_batch(client: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        client
            .score(Score::numeric(TRACE, format!("{prefix}-{i}"), 0.5))
            .unwrap_or_else(|e| panic!("{prefix}-{i}: {e}"));
    }
}

#[test]
fn flush_and_shutdown_without_a_runtime() {
    let server = start_server();
    let client = parked(builder(&server)).build().expect("build client");
    score_batch(&client, "plain", 100);
    client.flush(LONG).expect("flush");
    assert_eq!(server.score_count(), 100);
    // Unbounded timeouts neither overflow nor hang.
    score_batch(&client, "plain-max", 25);
    client.flush(Duration::MAX).expect("flush(Duration::MAX)");
    assert_eq!(server.score_count(), 125);
    score_batch(&client, "plain-late", 25);
    client
        .shutdown(Duration::MAX)
        .expect("shutdown(Duration::MAX)");
    assert_eq!(server.score_count(), 150);
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 150,
            sent: 150,
            ..Counts::default()
        }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn flush_and_shutdown_inside_a_current_thread_runtime() {
    let server = start_server();
    let client = parked(builder(&server)).build().expect("build client");
    score_batch(&client, "ct-blocking", 100);
    // Blocking flush straight from the async fn, on the runtime's only thread.
    client.flush(LONG).expect("blocking flush");
    assert_eq!(server.score_count(), 100);

    score_batch(&client, "ct-async", 100);
    client.flush_async(LONG).await.expect("async flush");
    assert_eq!(server.score_count(), 200);

    // A task on this runtime scores and flushes too.
    let task_client = client.clone();
    tokio::spawn(async move {
        score_batch(&task_client, "ct-task", 50);
        task_client.flush_async(LONG).await
    })
    .await
    .expect("task ran")
    .expect("flush in a task");
    assert_eq!(server.score_count(), 250);

    score_batch(&client, "ct-shutdown", 50);
    client.shutdown(LONG).expect("blocking shutdown");
    assert_eq!(server.score_count(), 300);
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 300,
            sent: 300,
            ..Counts::default()
        }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_async_inside_a_current_thread_runtime() {
    let server = start_server();
    let client = parked(builder(&server)).build().expect("build client");
    score_batch(&client, "ct-shutdown-async", 100);
    client.shutdown_async(LONG).await.expect("async shutdown");
    assert_eq!(server.score_count(), 100);
    assert_eq!(client.shutdown_async(LONG).await, Ok(()), "idempotent");
    assert_eq!(client.flush_async(LONG).await, Err(FlushError::ShutDown));
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 100,
            sent: 100,
            ..Counts::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_shutdown_inside_a_multi_thread_runtime() {
    let server = Arc::new(start_server());
    let client = parked(builder(&server)).build().expect("build client");
    score_batch(&client, "mt-blocking", 100);
    client
        .flush(LONG)
        .expect("blocking flush on a runtime thread");
    assert_eq!(server.score_count(), 100);

    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let prefix = format!("mt-task-{t}");
                score_batch(&client, &prefix, 100);
                client
                    .flush_async(LONG)
                    .await
                    .expect("async flush in a task");
                let mine = server
                    .scores()
                    .iter()
                    .filter(|s| {
                        s.body["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with(&prefix))
                    })
                    .count();
                assert_eq!(mine, 100, "task {t} after its flush");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task finished without panicking");
    }
    let blocking_client = client.clone();
    tokio::task::spawn_blocking(move || {
        score_batch(&blocking_client, "mt-spawn-blocking", 100);
        blocking_client.flush(LONG)
    })
    .await
    .expect("blocking task ran")
    .expect("flush from spawn_blocking");
    assert_eq!(server.score_count(), 600);

    score_batch(&client, "mt-shutdown", 100);
    client
        .shutdown(LONG)
        .expect("blocking shutdown on a runtime thread");
    assert_eq!(server.score_count(), 700);
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 700,
            sent: 700,
            ..Counts::default()
        }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_last_handle_inside_a_current_thread_runtime_delivers() {
    let server = start_server();
    let client = parked(builder(&server)).build().expect("build client");
    let clone = client.clone();
    tokio::spawn(async move {
        score_batch(&clone, "ct-drop-task", 50);
        // `clone` is dropped at the end of the task.
    })
    .await
    .expect("task ran");
    score_batch(&client, "ct-drop", 50);
    assert_eq!(client.stats().scores.pending, 100);
    drop(client);
    assert_eq!(server.score_count(), 100, "the drop delivered everything");
}

/// Timeouts inside a current-thread runtime: `flush_async` gives up by its deadline, and the
/// drop of the last handle gives up after `shutdown_timeout`, with the server hanging.
#[tokio::test(flavor = "current_thread")]
async fn timeouts_inside_a_current_thread_runtime_with_a_hanging_server() {
    let timeout = Duration::from_millis(200);
    let server = start_server();
    server.set_responder(|_| Some(Fault::Hang));
    let client = builder(&server)
        .request_timeout(Duration::from_secs(60))
        .shutdown_timeout(timeout)
        .build()
        .expect("build client");
    score_batch(&client, "ct-hang", 3);
    let started = Instant::now();
    let result = client.flush_async(timeout).await;
    assert_eq!(
        result,
        Err(FlushError::Timeout {
            pending: 3,
            timeout
        })
    );
    assert!(
        started.elapsed() < timeout + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 3,
            pending: 3,
            ..Counts::default()
        }
    );
    let started = Instant::now();
    drop(client);
    let took = started.elapsed();
    assert!(
        took < timeout + Duration::from_secs(1),
        "drop took {took:?}"
    );
    assert_eq!(server.score_count(), 0);
}

// -------------------------------------------------------------------------------------------
// 10. Flush timeout
// -------------------------------------------------------------------------------------------

#[test]
fn flush_timeout_reports_pending_then_shutdown_abandons_and_counts() {
    const N: u64 = 5;
    let timeout = Duration::from_millis(300);
    let server = start_server();
    server.set_responder(|_| Some(Fault::Hang));
    let client = builder(&server)
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("build client");
    score_batch(&client, "hang", N as usize);

    let started = Instant::now();
    let result = client.flush(timeout);
    let took = started.elapsed();
    assert_eq!(
        result,
        Err(FlushError::Timeout {
            pending: N,
            timeout
        })
    );
    assert!(took >= timeout * 9 / 10, "flush gave up early: {took:?}");
    assert!(
        took < timeout + Duration::from_secs(1),
        "flush took {took:?}"
    );
    let message = result.expect_err("timed out").to_string();
    assert!(
        message.contains('5') && message.contains("pending"),
        "{message}"
    );
    assert!(
        server.wait_for_requests(N as usize, LONG),
        "all five are hanging on the server"
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: N,
            pending: N,
            ..Counts::default()
        }
    );

    let started = Instant::now();
    let result = client.shutdown(timeout);
    let took = started.elapsed();
    assert_eq!(
        result,
        Err(FlushError::Timeout {
            pending: N,
            timeout
        })
    );
    assert!(
        took < timeout + Duration::from_secs(1),
        "shutdown took {took:?}"
    );
    assert_eq!(
        client.shutdown(Duration::from_secs(5)),
        Err(FlushError::Timeout {
            pending: N,
            timeout
        }),
        "a second shutdown reports the first outcome"
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: N,
            shutdown: N,
            ..Counts::default()
        }
    );
    assert_eq!(server.score_count(), 0);
}

// -------------------------------------------------------------------------------------------
// 11. Disabled client
// -------------------------------------------------------------------------------------------

fn assert_disabled_client_is_inert(server: &TestServer, client: &Client) {
    assert!(!client.is_enabled());
    let all = [
        Score::numeric(TRACE, "fine", 0.5),
        Score::new("not-a-uuid", "", "nan"),
        Score::categorical(TRACE, "x", "").metadata(json!([1])),
        Score::new(TRACE, "b", "yes").data_type(ScoreDataType::Boolean),
    ];
    for score in all {
        assert_eq!(
            client.score(score),
            Ok(()),
            "a disabled client accepts everything"
        );
    }
    assert_eq!(client.flush(LONG), Ok(()));
    assert_eq!(client.shutdown(LONG), Ok(()));
    assert_eq!(client.score(Score::numeric(TRACE, "after", 0.5)), Ok(()));
    assert_eq!(client.stats(), Stats::default(), "all zero");
    assert_eq!(server.request_count(), 0, "nothing sent");
}

#[test]
fn disabled_client_accepts_everything_and_sends_nothing() {
    let server = start_server();
    let client = builder(&server)
        .enabled(false)
        .build()
        .expect("build disabled client");
    assert_disabled_client_is_inert(&server, &client);

    // No key or project is needed when disabled.
    let bare = Client::builder()
        .enabled(false)
        .build()
        .expect("no key needed");
    assert_disabled_client_is_inert(&server, &bare);
    assert_disabled_client_is_inert(&server, &Client::disabled());

    for off in ["false", "0", "no", "off", "FALSE"] {
        let from_vars = ClientBuilder::from_vars([
            ("PANDAPROBE_ENABLED", off),
            ("PANDAPROBE_API_KEY", server.api_key()),
            ("PANDAPROBE_PROJECT_NAME", PROJECT),
            ("PANDAPROBE_ENDPOINT", server.url().as_str()),
        ])
        .build()
        .expect("build from vars");
        assert!(!from_vars.is_enabled(), "PANDAPROBE_ENABLED={off}");
        assert_disabled_client_is_inert(&server, &from_vars);
    }
    // And "true" really enables (so the loop above could fail).
    let on = ClientBuilder::from_vars([
        ("PANDAPROBE_ENABLED", "True"),
        ("PANDAPROBE_API_KEY", server.api_key()),
        ("PANDAPROBE_PROJECT_NAME", PROJECT),
        ("PANDAPROBE_ENDPOINT", server.url().as_str()),
    ])
    .build()
    .expect("build enabled from vars");
    assert!(on.is_enabled());
    on.shutdown(LONG).expect("clean shutdown");
}

// -------------------------------------------------------------------------------------------
// 12. The API key stays secret
// -------------------------------------------------------------------------------------------

#[test]
fn debug_output_never_contains_the_api_key() {
    const SECRET: &str = "sk_pp_TopSecret_0123456789";
    let server = TestServer::builder()
        .api_key(SECRET)
        .start()
        .expect("start the test server");
    let b = builder(&server).api_key(SECRET);
    for text in [format!("{b:?}"), format!("{b:#?}")] {
        assert!(
            !text.contains(SECRET),
            "ClientBuilder Debug leaks the key: {text}"
        );
        assert!(!text.contains("TopSecret"), "{text}");
    }
    let client = b.build().expect("build client");
    client
        .score(Score::numeric(TRACE, "secret", 0.5))
        .expect("accepted");
    client.flush(LONG).expect("delivered with the right key");
    assert_eq!(server.score_count(), 1);
    for text in [format!("{client:?}"), format!("{client:#?}")] {
        assert!(!text.contains(SECRET), "Client Debug leaks the key: {text}");
        assert!(!text.contains("TopSecret"), "{text}");
    }
    // A key that cannot be sent: the error names the setting, not the key.
    let bad = Client::builder()
        .api_key("sk_pp_TopSecret\n0123")
        .project_name(PROJECT)
        .build()
        .expect_err("a newline cannot go in a header");
    let text = format!("{bad} {bad:?}");
    assert!(text.contains("api_key"), "{text}");
    assert!(
        !text.contains("TopSecret"),
        "ConfigError leaks the key: {text}"
    );
    // Environment-style configuration too.
    let from_vars = ClientBuilder::from_vars([("PANDAPROBE_API_KEY", SECRET)]);
    assert!(!format!("{from_vars:?}").contains("TopSecret"));
    let missing_project = from_vars.build().expect_err("project missing");
    assert!(!format!("{missing_project} {missing_project:?}").contains("TopSecret"));
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: 1,
            sent: 1,
            ..Counts::default()
        }
    );
}

// -------------------------------------------------------------------------------------------
// The stats identity, sampled while producers score and the worker delivers
// -------------------------------------------------------------------------------------------

#[test]
fn stats_identity_holds_at_every_moment_under_load() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 1_500;
    let server = start_server();
    // Fail one first attempt in seven with a 503, so retries happen while sampling.
    let seen = Mutex::new(HashSet::new());
    server.set_responder(move |req| {
        let id = req.header("x-request-id")?.to_owned();
        let first = seen.lock().expect("responder lock").insert(id);
        (first && req.index % 7 == 3).then_some(Fault::Status(503))
    });
    let client = builder(&server)
        .batch_size(64)
        .flush_interval(Duration::from_millis(20))
        .build()
        .expect("build client");

    let done = AtomicBool::new(false);
    let samples = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = 0u64;
            let mut last = client.stats();
            while !done.load(Ordering::Acquire) {
                let s = client.stats();
                assert!(s.scores.is_balanced(), "unbalanced snapshot: {s:?}");
                assert!(s.traces.is_balanced(), "unbalanced snapshot: {s:?}");
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
                    assert!(now >= before, "{what} went backwards: {last:?} -> {s:?}");
                }
                last = s;
                samples += 1;
                // Sample continuously, but leave the two cores to the producers and the worker.
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
        client.flush(LONG).expect("flush after load");
        done.store(true, Ordering::Release);
        sampler.join().expect("sampler thread")
    });
    assert!(samples > 10, "only {samples} samples");

    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(server.score_count(), total as usize);
    let failed = server.status_count(503) as u64;
    assert!(failed > 0, "the responder injected failures");
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(
        Counts::of(&stats),
        Counts {
            accepted: total,
            sent: total,
            ..Counts::default()
        }
    );
    assert_eq!(stats.scores.retried, failed, "one retry per injected 503");
    assert_eq!(stats.requests, total + failed);
    client.shutdown(LONG).expect("clean shutdown");
}

/// `Duration::MAX` means "never" for every duration setting; none of them may overflow the
/// worker's clock arithmetic (a panic there would lose every record).
#[test]
fn endless_durations_do_not_break_the_worker() {
    let server = start_server();
    server.fail_next(2, Fault::Status(503));
    let client = builder(&server)
        .flush_interval(Duration::MAX)
        .request_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .shutdown_timeout(Duration::MAX)
        .max_retry_after(Duration::MAX)
        .retry_backoff(Duration::from_millis(1), Duration::MAX)
        .retry_max_elapsed(Duration::MAX)
        .build()
        .expect("build the client");
    let id = Uuid::new_v4();
    for _ in 0..3 {
        client
            .score(Score::numeric(id, "endless", 0.5))
            .expect("accepted");
    }
    client.flush(LONG).expect("flush delivers");
    client
        .flush(Duration::MAX)
        .expect("a flush with no deadline");
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(stats.scores.sent, 3, "{stats:?}");
    assert_eq!(stats.scores.retried, 2, "{stats:?}");
    assert_eq!(server.score_count(), 3);
    drop(client); // shuts down with an endless timeout: returns once drained
}

/// A full queue wakes the worker at once, even when the batch threshold can never be reached
/// (`batch_size` above `max_queue_size`) and the interval timer is far away.
#[test]
fn a_full_queue_wakes_the_worker_without_waiting_for_the_interval() {
    let server = start_server();
    let client = builder(&server)
        .max_queue_size(10)
        .batch_size(1_000)
        .flush_interval(Duration::from_secs(60))
        .build()
        .expect("build the client");
    let id = Uuid::new_v4();
    let mut full = 0;
    for _ in 0..11 {
        if client.score(Score::numeric(id, "full", 0.5)) == Err(ScoreError::QueueFull) {
            full += 1;
        }
    }
    assert_eq!(full, 1, "the eleventh score finds the queue full");
    // No flush: only the wake-up on the full queue can start delivery before the 60 s tick.
    assert!(
        server.wait_for_scores(10, Duration::from_secs(5)),
        "the worker slept on a full queue: {} stored",
        server.score_count()
    );
    let stats = client.stats();
    assert_balanced(&stats);
    assert_eq!(stats.scores.dropped.queue_full, 1, "{stats:?}");
}
