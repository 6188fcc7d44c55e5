//! The fault matrix of issue 4: for each fault the test server can inject, score a known number
//! of records from several threads, flush, and account for every one of them exactly:
//! `delivered + dropped-by-reason == accepted`, with the right reason, and duplicates on the
//! server only where an attempt's outcome was ambiguous (`stats.scores.ambiguous >= duplicates`).
//!
//! Records are told apart on the server by their `X-Request-ID` (the SDK keeps it the same on
//! every retry of one record) and by a `{"t": thread, "n": i}` metadata object.
//!
//! Run with `cargo test --test faults -- --nocapture` to see the figures.
#![cfg(feature = "testing")]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use pandaprobe::testing::{Fault, TestServer, SCORES_PATH};
use pandaprobe::{Client, ClientBuilder, FlushError, QueueFullPolicy, Score, ScoreError, Stats};
use serde_json::json;

const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
const THREADS: usize = 4;
const PER_THREAD: usize = 50;
const RECORDS: usize = THREADS * PER_THREAD;
const R: u64 = RECORDS as u64;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A client for `server` with fast retries, so that every fault resolves in milliseconds.
fn builder(server: &TestServer) -> ClientBuilder {
    Client::builder()
        .api_key(server.api_key())
        .project_name("faults")
        .endpoint(server.url())
        .flush_interval(ms(20))
        .request_timeout(Duration::from_secs(5))
        .retry_backoff(ms(5), ms(50))
        .max_retry_after(ms(500))
        .shutdown_timeout(Duration::from_secs(2))
}

fn server() -> TestServer {
    TestServer::start().expect("start the test server")
}

/// Polls `cond` until it holds or `timeout` passes; `true` if it held.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(ms(2));
    }
}

fn record(t: usize, n: usize) -> Score {
    Score::numeric(TRACE_ID, "faults", 0.5).metadata(json!({ "t": t, "n": n }))
}

/// Scores `per_thread` records from each of `threads` threads at once; returns how many
/// `score()` calls succeeded and the errors of the others.
fn score_from_threads(
    client: &Client,
    threads: usize,
    per_thread: usize,
) -> (u64, Vec<ScoreError>) {
    let results: Vec<(u64, Vec<ScoreError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let client = client.clone();
                s.spawn(move || {
                    let mut ok = 0;
                    let mut errors = Vec::new();
                    for n in 0..per_thread {
                        match client.score(record(t, n)) {
                            Ok(()) => ok += 1,
                            Err(e) => errors.push(e),
                        }
                    }
                    (ok, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a producer thread panicked"))
            .collect()
    });
    let ok = results.iter().map(|r| r.0).sum();
    let errors = results.into_iter().flat_map(|r| r.1).collect();
    (ok, errors)
}

/// What the server stored, told apart by `X-Request-ID`.
#[derive(Debug)]
struct Stored {
    /// Rows stored.
    total: u64,
    /// Distinct records among them.
    unique: u64,
    /// Rows beyond the first of each record.
    duplicates: u64,
}

fn stored(server: &TestServer) -> Stored {
    let mut by_id: HashMap<String, u64> = HashMap::new();
    for score in server.scores() {
        let id = score
            .request_id
            .clone()
            .expect("every stored score carries an X-Request-ID");
        *by_id.entry(id).or_default() += 1;
    }
    let total: u64 = by_id.values().sum();
    let unique = by_id.len() as u64;
    Stored {
        total,
        unique,
        duplicates: total - unique,
    }
}

/// Every attempt of one record (same metadata) carried the same `X-Request-ID`, and different
/// records carried different ones.
fn assert_request_ids_stable(server: &TestServer) {
    let mut ids_of_record: HashMap<String, HashSet<String>> = HashMap::new();
    for request in server.requests() {
        if request.path != SCORES_PATH {
            continue;
        }
        let key = request
            .json()
            .map(|body| body["metadata"].to_string())
            .expect("score bodies are JSON");
        let id = request
            .request_id()
            .expect("every request carries an X-Request-ID")
            .to_owned();
        ids_of_record.entry(key).or_default().insert(id);
    }
    let mut all_ids = HashSet::new();
    for (record, ids) in &ids_of_record {
        assert_eq!(
            ids.len(),
            1,
            "record {record} was sent with several request ids: {ids:?}"
        );
        all_ids.extend(ids.iter().cloned());
    }
    assert_eq!(
        all_ids.len(),
        ids_of_record.len(),
        "two records shared a request id"
    );
}

fn report(label: &str, stats: &Stats, stored: &Stored, server: &TestServer) {
    eprintln!(
        "[{label}] {} | server stored {} (unique {}, duplicates {}) requests seen {} / sent {}",
        stats.scores,
        stored.total,
        stored.unique,
        stored.duplicates,
        server.request_count(),
        stats.requests,
    );
}

/// The identity every test ends with: balanced, nothing pending, every delivered record on the
/// server, duplicates only from ambiguous attempts. Returns what the server stored.
fn assert_accounted(label: &str, client: &Client, server: &TestServer) -> (Stats, Stored) {
    let stats = client.stats();
    let st = stored(server);
    report(label, &stats, &st, server);
    let s = &stats.scores;
    assert!(s.is_balanced(), "[{label}] unbalanced: {s:?}");
    assert!(
        stats.traces.is_balanced(),
        "[{label}] traces unbalanced: {:?}",
        stats.traces
    );
    assert_eq!(s.pending, 0, "[{label}] still pending after flush: {s:?}");
    assert_eq!(s.sent + s.dropped.total(), s.accepted, "[{label}] {s:?}");
    assert!(
        st.duplicates <= s.ambiguous,
        "[{label}] {} duplicates but only {} ambiguous attempts",
        st.duplicates,
        s.ambiguous
    );
    assert_request_ids_stable(server);
    (stats, st)
}

// ---------------------------------------------------------------------------------------------
// Transient statuses
// ---------------------------------------------------------------------------------------------

/// `failures` requests get `status`, then the server answers normally: everything is delivered
/// once, every failure cost exactly one retry, and none of them was ambiguous.
fn transient_status_then_success(status: u16) {
    const FAILURES: u64 = 60;
    let server = server();
    server.fail_next_on(SCORES_PATH, FAILURES as usize, Fault::Status(status));
    let client = builder(&server).build().expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client.flush(Duration::from_secs(10)).expect("flush");
    let label = format!("{status} x{FAILURES} then 201");
    let (stats, st) = assert_accounted(&label, &client, &server);
    let s = stats.scores;
    assert_eq!(s.accepted, R);
    assert_eq!(s.sent, R, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!(s.retried, FAILURES, "one retry per failed attempt: {s:?}");
    // After a 500 the server closes the socket: a retry on that socket would fail with a reset
    // and count as ambiguous. None did, so every retry went out on a fresh connection.
    assert_eq!(s.ambiguous, 0, "{s:?}");
    assert_eq!((st.total, st.unique, st.duplicates), (R, R, 0));
    assert_eq!(server.status_count(status) as u64, FAILURES);
    assert_eq!(server.status_count(201) as u64, R);
    assert_eq!(server.request_count() as u64, R + FAILURES);
    assert_eq!(stats.requests, R + FAILURES);
}

#[test]
fn status_500_then_201_is_retried_on_a_fresh_connection() {
    transient_status_then_success(500);
}

#[test]
fn status_502_then_201() {
    transient_status_then_success(502);
}

#[test]
fn status_503_then_201() {
    transient_status_then_success(503);
}

#[test]
fn status_504_then_201() {
    transient_status_then_success(504);
}

#[test]
fn status_408_then_201() {
    transient_status_then_success(408);
}

// ---------------------------------------------------------------------------------------------
// 429 and Retry-After
// ---------------------------------------------------------------------------------------------

/// What a 429 window did: requests the server saw during it, when everything was delivered.
struct Window429 {
    during: u64,
    stats: Stats,
    after_window: Duration,
}

/// 429 without `Retry-After` on every score request for `window`, then 201. Scores
/// [`RECORDS`] records at once and flushes.
fn status_429_window(
    label: &str,
    window: Duration,
    client: ClientBuilder,
    server: &TestServer,
) -> Window429 {
    let in_window = Arc::new(AtomicUsize::new(0));
    let window_end = Instant::now() + window;
    let counter = Arc::clone(&in_window);
    server.set_responder(move |request| {
        if request.path == SCORES_PATH && Instant::now() < window_end {
            counter.fetch_add(1, Ordering::Relaxed);
            Some(Fault::Status(429))
        } else {
            None
        }
    });
    let client = client.build().expect("client");
    let start = Instant::now();
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client.flush(Duration::from_secs(120)).expect("flush");
    let done = Instant::now();
    let (stats, st) = assert_accounted(label, &client, server);
    let s = stats.scores;
    let during = in_window.load(Ordering::Relaxed) as u64;
    let per_record = server.request_count() as f64 / s.sent as f64;
    let after_window = done.saturating_duration_since(window_end);
    eprintln!(
        "[{label}] requests during the window {during}, total requests {}, \
         requests per delivered record {per_record:.3}, all delivered {:?} after the start, \
         {after_window:?} after the window ended",
        server.request_count(),
        done - start,
    );
    assert_eq!(s.sent, R, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!((st.total, st.duplicates), (R, 0));
    assert_eq!(server.status_count(429) as u64, during);
    assert_eq!(s.retried, during, "one retry per 429: {s:?}");
    Window429 {
        during,
        stats,
        after_window,
    }
}

/// 429 without `Retry-After` for one second: sending pauses as a whole (no storm of
/// per-record retries), and everything goes out once the window is over.
#[test]
fn status_429_window_pauses_sending_without_a_storm() {
    const MAX_IN_FLIGHT: usize = 8;
    const CAP: Duration = Duration::from_secs(2);
    let server = server();
    let client = builder(&server)
        .max_in_flight(MAX_IN_FLIGHT)
        .retry_backoff(ms(50), Duration::from_secs(1))
        .max_retry_after(CAP);
    let w = status_429_window("429 window 1s", Duration::from_secs(1), client, &server);
    // The first burst is bounded by max_in_flight; after it, one probe at a time with a
    // doubling pause from 50 ms: 50+100+200+400 ms fit in the window, so about 5 probes.
    assert!(
        w.during < 20,
        "{} requests during a 1 s 429 window: a storm (max_in_flight {MAX_IN_FLIGHT})",
        w.during
    );
    assert!(w.stats.requests < R + 20, "{:?}", w.stats);
    // The pause stays within max_retry_after (here 2 s).
    assert!(
        w.after_window < CAP + Duration::from_secs(1),
        "delivered {:?} after the window ended, beyond the {CAP:?} cap",
        w.after_window
    );
}

/// With the default 32 requests in flight, the burst that meets a rate-limit window comes back
/// as 32 answers of 429: the pause must grow once per failed probe, not once per answer (which
/// once turned a one-second window into a 60 s pause).
#[test]
fn status_429_window_with_default_settings_pauses_about_the_window() {
    let server = server();
    // Defaults for max_in_flight (32) and max_retry_after (60 s).
    let client = builder(&server)
        .retry_backoff(ms(50), Duration::from_secs(1))
        .max_retry_after(pandaprobe::DEFAULT_MAX_RETRY_AFTER)
        .max_in_flight(pandaprobe::DEFAULT_MAX_IN_FLIGHT);
    let w = status_429_window(
        "429 window 1s, defaults",
        Duration::from_secs(1),
        client,
        &server,
    );
    assert!(
        w.after_window < Duration::from_secs(2),
        "a 1 s rate-limit window paused sending until {:?} after it ended",
        w.after_window
    );
}

/// Request times seen by a responder, for the score path.
type Times = Arc<Mutex<Vec<(Instant, SystemTime)>>>;

/// The first score request gets `429` with the `Retry-After` that `make` builds from the
/// answer's time; every later request is answered normally. Scores one record, waits for the
/// 429, then scores the rest: no request may reach the server before the pause is over.
/// Returns the times of the score requests and the `Retry-After` sent.
fn retry_after_pause(
    label: &str,
    make: fn(SystemTime) -> String,
) -> (Vec<(Instant, SystemTime)>, String) {
    let server = server();
    let times: Times = Arc::new(Mutex::new(Vec::new()));
    let sent_value: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let first = Arc::new(AtomicBool::new(true));
    {
        let times = Arc::clone(&times);
        let sent_value = Arc::clone(&sent_value);
        server.set_responder(move |request| {
            if request.path != SCORES_PATH {
                return None;
            }
            let now = (Instant::now(), SystemTime::now());
            times.lock().expect("times").push(now);
            if first.swap(false, Ordering::AcqRel) {
                let value = make(now.1);
                *sent_value.lock().expect("value") = Some(value.clone());
                Some(Fault::RetryAfter {
                    status: 429,
                    retry_after: value,
                })
            } else {
                None
            }
        });
    }
    let client = builder(&server)
        .max_retry_after(Duration::from_secs(10))
        .build()
        .expect("client");
    client.score(record(99, 0)).expect("score the first record");
    // The worker has taken the 429 in (and set its pause) once it counts the retry.
    assert!(
        wait_until(Duration::from_secs(5), || client.stats().scores.retried
            >= 1),
        "the 429 was not answered"
    );
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client.flush(Duration::from_secs(10)).expect("flush");
    let (stats, st) = assert_accounted(label, &client, &server);
    let s = stats.scores;
    assert_eq!(s.sent, R + 1, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!(s.retried, 1, "{s:?}");
    assert_eq!((st.total, st.duplicates), (R + 1, 0));
    let times = times.lock().expect("times").clone();
    assert_eq!(times.len() as u64, R + 2);
    let value = sent_value
        .lock()
        .expect("value")
        .clone()
        .expect("a Retry-After was sent");
    (times, value)
}

#[test]
fn retry_after_seconds_is_honoured() {
    let (times, _) = retry_after_pause("429 Retry-After: 1", |_| "1".to_owned());
    let (t0, _) = times[0];
    let next = times[1..]
        .iter()
        .map(|t| t.0)
        .min()
        .expect("later requests");
    let pause = next - t0;
    eprintln!("[429 Retry-After: 1] next score request {pause:?} after the 429");
    assert!(
        pause >= Duration::from_secs(1),
        "sent again {pause:?} after Retry-After: 1"
    );
    assert!(
        pause < Duration::from_secs(2),
        "paused {pause:?} for Retry-After: 1"
    );
}

#[test]
fn retry_after_http_date_is_honoured() {
    // An HTTP date has whole seconds: `now + 2 s` truncated is between 1 and 2 s away.
    let (times, value) = retry_after_pause("429 Retry-After: <date>", |now| {
        httpdate::fmt_http_date(now + Duration::from_secs(2))
    });
    let until = httpdate::parse_http_date(&value).expect("a valid HTTP date");
    let (t0, t0_wall) = times[0];
    let (next, next_wall) = *times[1..].iter().min().expect("later requests");
    eprintln!(
        "[429 Retry-After: {value}] next score request {:?} after the 429 (date {:?} after it)",
        next - t0,
        until.duration_since(t0_wall).unwrap_or_default(),
    );
    // The wall clock and the monotonic one may drift apart by a hair while the test runs.
    let tolerance = ms(20);
    assert!(
        next_wall + tolerance >= until,
        "sent again {:?} before the Retry-After date",
        until.duration_since(next_wall).unwrap_or_default()
    );
    assert!(next - t0 >= ms(900), "paused only {:?}", next - t0);
    assert!(next - t0 < Duration::from_secs(3), "paused {:?}", next - t0);
}

/// `Retry-After: 86400` (on a 429 and on a 503) is capped by `max_retry_after`.
#[test]
fn hostile_retry_after_is_capped() {
    let server = server();
    let hostile = |status| Fault::RetryAfter {
        status,
        retry_after: "86400".to_owned(),
    };
    server.fail_next_on(SCORES_PATH, 8, hostile(429));
    server.fail_next_on(SCORES_PATH, 8, hostile(503));
    let client = builder(&server)
        .max_retry_after(ms(500))
        .build()
        .expect("client");
    let start = Instant::now();
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client.flush(Duration::from_secs(10)).expect("flush");
    let elapsed = start.elapsed();
    let (stats, st) = assert_accounted("Retry-After: 86400 capped at 500ms", &client, &server);
    eprintln!("[Retry-After: 86400] everything delivered in {elapsed:?}");
    let s = stats.scores;
    assert_eq!(s.sent, R, "{s:?}");
    assert_eq!(s.retried, 16, "{s:?}");
    assert_eq!((st.total, st.duplicates), (R, 0));
    assert!(
        elapsed < Duration::from_secs(3),
        "took {elapsed:?} despite the 500 ms cap"
    );
}

// ---------------------------------------------------------------------------------------------
// Broken connections
// ---------------------------------------------------------------------------------------------

/// The server reads the request and closes the connection without an answer: the attempt is
/// ambiguous, retried, delivered; nothing was stored twice (a reset stores nothing).
#[test]
fn connection_reset_is_retried_and_ambiguous() {
    const RESETS: u64 = 40;
    let server = server();
    server.fail_next_on(SCORES_PATH, RESETS as usize, Fault::Reset);
    let client = builder(&server).build().expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client.flush(Duration::from_secs(10)).expect("flush");
    let (stats, st) = assert_accounted("Reset x40", &client, &server);
    let s = stats.scores;
    assert_eq!(s.sent, R, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!(s.retried, RESETS, "{s:?}");
    assert_eq!(
        s.ambiguous, RESETS,
        "a reset after sending is ambiguous: {s:?}"
    );
    assert_eq!((st.total, st.unique, st.duplicates), (R, R, 0));
    assert_eq!(server.request_count() as u64, R + RESETS);
}

/// The server stores the record and then closes the connection: the retry stores it again.
/// Exactly one duplicate per such attempt, each one counted as ambiguous.
#[test]
fn store_then_reset_makes_counted_duplicates() {
    const RESETS: u64 = 40;
    let server = server();
    server.fail_next_on(SCORES_PATH, RESETS as usize, Fault::StoreThenReset);
    let client = builder(&server).build().expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client.flush(Duration::from_secs(10)).expect("flush");
    let (stats, st) = assert_accounted("StoreThenReset x40", &client, &server);
    let s = stats.scores;
    assert_eq!(s.sent, R, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!(s.ambiguous, RESETS, "{s:?}");
    assert_eq!(st.unique, R);
    assert_eq!(st.duplicates, RESETS, "one extra row per store-then-reset");
    assert!(st.duplicates > 0 && s.ambiguous >= st.duplicates);
}

/// Responses slower than the request timeout: the client gives up (ambiguous), retries, and
/// the slow attempt still stores: duplicates, each one covered by an ambiguous retry.
#[test]
fn responses_slower_than_the_timeout_are_retried_and_counted() {
    const SLOW: u64 = 20;
    let server = server();
    server.fail_next_on(SCORES_PATH, SLOW as usize, Fault::Delay(ms(300)));
    let client = builder(&server)
        .request_timeout(ms(100))
        .build()
        .expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client.flush(Duration::from_secs(10)).expect("flush");
    // The slow attempts store when their delay ends, whether or not the client still listens.
    assert!(
        server.wait_for_scores(RECORDS + SLOW as usize, Duration::from_secs(5)),
        "the delayed attempts did not all store: {}",
        server.score_count()
    );
    let (stats, st) = assert_accounted("Delay 300ms > timeout 100ms x20", &client, &server);
    let s = stats.scores;
    assert_eq!(s.sent, R, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert!(
        s.ambiguous >= SLOW,
        "every timed-out attempt is ambiguous: {s:?}"
    );
    assert_eq!(st.unique, R);
    // Each slow attempt stored once more (a normal answer that misses the 100 ms timeout on a
    // loaded machine would add one, covered by its own ambiguous retry).
    assert!(st.duplicates >= SLOW, "{st:?}");
}

// ---------------------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------------------

/// Nothing listens when the records are scored; the server comes up; everything is delivered.
#[test]
fn server_not_listening_at_start_then_up() {
    let server = TestServer::builder()
        .bind_later()
        .start()
        .expect("reserve a port");
    let client = builder(&server).max_retries(100).build().expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    // Every record has failed at least once against the closed port.
    assert!(
        wait_until(Duration::from_secs(10), || client.stats().scores.retried
            >= R),
        "records were not attempted: {:?}",
        client.stats().scores
    );
    server.restart().expect("start listening");
    client.flush(Duration::from_secs(10)).expect("flush");
    let (stats, st) = assert_accounted("not listening, then up", &client, &server);
    let s = stats.scores;
    assert_eq!(s.sent, R, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!(
        s.ambiguous, 0,
        "a refused connection never reached the server: {s:?}"
    );
    assert_eq!((st.total, st.unique, st.duplicates), (R, R, 0));
    assert_eq!(server.request_count() as u64, R);
}

/// The server goes away mid-run and comes back: delivered within the retry limits.
#[test]
fn server_goes_away_mid_run_and_comes_back() {
    let server = server();
    let client = builder(&server).max_retries(100).build().expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD / 2);
    assert_eq!((ok, errors), (R / 2, vec![]));
    client.flush(Duration::from_secs(10)).expect("first half");
    server.stop();
    let before = client.stats().scores.retried;
    let (ok, errors) = std::thread::scope(|s| {
        let producers = s.spawn(|| {
            let mut ok = 0;
            let mut errors = Vec::new();
            for n in PER_THREAD / 2..PER_THREAD {
                for t in 0..THREADS {
                    match client.score(record(t, n)) {
                        Ok(()) => ok += 1,
                        Err(e) => errors.push(e),
                    }
                }
            }
            (ok, errors)
        });
        producers.join().expect("producer")
    });
    assert_eq!((ok, errors), (R / 2, vec![]));
    assert!(
        wait_until(Duration::from_secs(10), || {
            client.stats().scores.retried >= before + R / 2
        }),
        "records were not attempted while the server was down"
    );
    server.restart().expect("listen again");
    client.flush(Duration::from_secs(10)).expect("flush");
    let (stats, st) = assert_accounted("down mid-run, back", &client, &server);
    let s = stats.scores;
    assert_eq!(s.sent, R, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!((st.total, st.unique), (R, R));
}

/// The server stays down: with `max_retries(2)` every record is tried exactly three times and
/// dropped as retries exhausted.
#[test]
fn server_kept_down_drops_as_retries_exhausted_by_count() {
    let server = server();
    server.stop();
    let client = builder(&server).max_retries(2).build().expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client
        .flush(Duration::from_secs(10))
        .expect("flush ends with every record dropped");
    let (stats, st) = assert_accounted("kept down, max_retries(2)", &client, &server);
    let s = stats.scores;
    assert_eq!(s.sent, 0, "{s:?}");
    assert_eq!(s.dropped.retries_exhausted, R, "{s:?}");
    assert_eq!(s.dropped.total(), R, "{s:?}");
    assert_eq!(s.retried, 2 * R, "{s:?}");
    assert_eq!(stats.requests, 3 * R);
    assert_eq!(st.total, 0);
}

/// The server stays down: with a short `retry_max_elapsed` the records are dropped by time.
#[test]
fn server_kept_down_drops_as_retries_exhausted_by_time() {
    let server = server();
    server.stop();
    let client = builder(&server)
        .max_retries(1_000)
        .retry_max_elapsed(ms(300))
        .build()
        .expect("client");
    let start = Instant::now();
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client
        .flush(Duration::from_secs(10))
        .expect("flush ends with every record dropped");
    let elapsed = start.elapsed();
    let (stats, _) = assert_accounted("kept down, retry_max_elapsed(300ms)", &client, &server);
    let s = stats.scores;
    assert_eq!(s.sent, 0, "{s:?}");
    assert_eq!(s.dropped.retries_exhausted, R, "{s:?}");
    assert!(
        elapsed >= ms(300),
        "dropped after {elapsed:?}, before the retry time ran out"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "dropped only after {elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Final answers
// ---------------------------------------------------------------------------------------------

/// Captures the `pandaprobe` warnings of every client in this test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        tracing_subscriber::fmt()
            .with_env_filter("pandaprobe=warn")
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .try_init()
            .expect("install the log capture");
        buffer
    }))
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_containing(needle: &str) -> Vec<String> {
    let logs = captured_logs();
    let text =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// A final status (here 401 from a wrong key, or an injected 422 with the real body): dropped
/// at once as rejected, one request per record, one log line naming the server's message.
fn rejected_at_once(label: &str, server: &TestServer, client: &Client, status: u16, message: &str) {
    captured_logs();
    let (ok, errors) = score_from_threads(client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    client.flush(Duration::from_secs(10)).expect("flush");
    let (stats, st) = assert_accounted(label, client, server);
    let s = stats.scores;
    assert_eq!(s.sent, 0, "{s:?}");
    assert_eq!(s.dropped.rejected, R, "{s:?}");
    assert_eq!(s.dropped.total(), R, "{s:?}");
    assert_eq!(s.retried, 0, "{s:?}");
    assert_eq!(stats.requests, R, "exactly one request per record");
    assert_eq!(server.request_count() as u64, R);
    assert_eq!(server.status_count(status) as u64, R);
    assert_eq!(st.total, 0);
    let lines = log_lines_containing(message);
    assert_eq!(
        lines.len(),
        1,
        "expected one log line naming {message:?}, got {lines:#?}"
    );
    assert!(
        lines[0].contains("WARN") && lines[0].contains("rejected"),
        "{}",
        lines[0]
    );
    eprintln!("[{label}] log: {}", lines[0]);
}

#[test]
fn status_401_is_rejected_at_once_and_logged_once() {
    let server = server();
    let client = builder(&server)
        .api_key("sk_pp_revoked")
        .build()
        .expect("client");
    rejected_at_once("401", &server, &client, 401, "HTTP 401: Invalid API key");
}

#[test]
fn status_422_is_rejected_at_once_and_logged_once() {
    let server = server();
    server.set_responder(|request| (request.path == SCORES_PATH).then_some(Fault::Status(422)));
    let client = builder(&server).build().expect("client");
    rejected_at_once("422", &server, &client, 422, "Injected validation error");
}

// ---------------------------------------------------------------------------------------------
// A full queue under a dead server
// ---------------------------------------------------------------------------------------------

/// This thread's `(voluntary, involuntary)` context switches so far: a call that waits on a
/// lock or a channel switches voluntarily; one the OS preempts, involuntarily.
fn context_switches() -> (u64, u64) {
    let status =
        std::fs::read_to_string("/proc/thread-self/status").expect("read /proc/thread-self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .expect("context switch counts in /proc/thread-self/status")
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The server accepts connections and never answers: the queue fills, `score()` keeps
/// returning at once with `QueueFull`, every drop is counted, memory stays bounded.
#[test]
fn queue_full_under_a_dead_server_is_non_blocking_counted_and_bounded() {
    const CALLS: usize = 1_000_000;
    const TIMED: usize = 100_000;
    const QUEUE: usize = 10_000;
    let server = server();
    server.set_responder(|_| Some(Fault::Hang));
    let client = builder(&server)
        .max_queue_size(QUEUE)
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let trace_id = uuid::Uuid::parse_str(TRACE_ID).expect("uuid");
    let mut latencies: Vec<u32> = Vec::with_capacity(TIMED);
    let rss_before = rss_kib();
    let mut ok = 0u64;
    let mut full = 0u64;
    let mut other = Vec::new();
    let switches_before = context_switches();
    let mut switches_timed = switches_before;
    let start = Instant::now();
    for i in 0..CALLS {
        let score = Score::numeric(trace_id, "queue-full", 0.5);
        let t = Instant::now();
        let result = client.score(score);
        if i < TIMED {
            latencies.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
            if i == TIMED - 1 {
                switches_timed = context_switches();
            }
        }
        match result {
            Ok(()) => ok += 1,
            Err(ScoreError::QueueFull) => full += 1,
            Err(e) => other.push(e),
        }
    }
    let elapsed = start.elapsed();
    let rss_after = rss_kib();
    latencies.sort_unstable();
    let pct = |p: f64| {
        Duration::from_nanos(u64::from(
            latencies[((latencies.len() - 1) as f64 * p) as usize],
        ))
    };
    let max = pct(1.0);
    let voluntary = switches_timed.0 - switches_before.0;
    let preempted = switches_timed.1 - switches_before.1;
    eprintln!(
        "[queue full] {CALLS} calls in {elapsed:?}: ok {ok}, queue_full {full}; score() over the \
         first {TIMED}: median {:?}, p99 {:?}, p99.9 {:?}, max {max:?}; VmRSS before {rss_before} KiB, \
         after {rss_after} KiB, growth {} KiB; context switches during the timed calls: \
         {voluntary} voluntary, {preempted} involuntary",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        rss_after as i64 - rss_before as i64,
    );
    assert!(
        other.is_empty(),
        "unexpected errors: {:?}",
        &other[..other.len().min(5)]
    );
    assert_eq!(ok + full, CALLS as u64);
    assert!(
        full >= (CALLS - 2 * QUEUE) as u64 / 2,
        "only {full} drops: the queue did not fill"
    );
    assert!(pct(0.999) < ms(1), "p99.9 of score() is {:?}", pct(0.999));
    // The sanity bound: 10 ms. On a shared 2-core machine the OS may preempt the thread in the
    // middle of a call (an involuntary switch, not a wait in score()): then the bound is looser.
    let bound = if preempted == 0 { ms(10) } else { ms(100) };
    assert!(
        max < bound,
        "a score() call took {max:?} ({preempted} preemptions during the timed calls)"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "RSS grew by {} KiB",
        rss_after - rss_before
    );
    let stats = client.stats();
    assert!(stats.scores.is_balanced(), "{stats:?}");
    assert_eq!(stats.scores.accepted, CALLS as u64);
    assert_eq!(stats.scores.dropped.queue_full, full);
    assert_eq!(stats.scores.sent, 0);
    // Shut down: what was queued or held is abandoned and counted.
    let result = client.shutdown(ms(200));
    let stats = client.stats();
    let s = stats.scores;
    assert_eq!(
        result,
        Err(FlushError::Timeout {
            pending: ok,
            timeout: ms(200)
        })
    );
    assert!(s.is_balanced(), "{s:?}");
    assert_eq!(s.pending, 0);
    assert_eq!(s.dropped.shutdown, ok, "{s:?}");
    assert_eq!(
        s.dropped.queue_full + s.dropped.shutdown,
        CALLS as u64,
        "{s:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Flush and shutdown under faults
// ---------------------------------------------------------------------------------------------

/// With the server hanging, `flush(1s)` fails after about a second and `shutdown(2s)` returns
/// after about two, reporting the abandoned records, which the stats count as dropped at
/// shutdown.
#[test]
fn flush_and_shutdown_under_a_hanging_server_keep_their_deadlines() {
    let server = server();
    server.set_responder(|_| Some(Fault::Hang));
    let client = builder(&server)
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    assert!(
        server.wait_for_requests(1, Duration::from_secs(5)),
        "nothing was sent"
    );

    let start = Instant::now();
    let flushed = client.flush(Duration::from_secs(1));
    let flush_took = start.elapsed();
    assert_eq!(
        flushed,
        Err(FlushError::Timeout {
            pending: R,
            timeout: Duration::from_secs(1)
        })
    );
    assert!(
        flush_took >= ms(900) && flush_took < Duration::from_secs(2),
        "flush(1s) took {flush_took:?}"
    );

    let start = Instant::now();
    let shut = client.shutdown(Duration::from_secs(2));
    let shutdown_took = start.elapsed();
    eprintln!(
        "[hang] flush(1s) took {flush_took:?}, shutdown(2s) took {shutdown_took:?}: {shut:?}"
    );
    assert_eq!(
        shut,
        Err(FlushError::Timeout {
            pending: R,
            timeout: Duration::from_secs(2)
        })
    );
    assert!(
        shutdown_took >= ms(1900) && shutdown_took < Duration::from_secs(3),
        "shutdown(2s) took {shutdown_took:?}"
    );
    let (stats, _) = assert_accounted("hang: flush then shutdown", &client, &server);
    assert_eq!(stats.scores.dropped.shutdown, R);
    assert_eq!(stats.scores.sent, 0);
    // After shutdown: refused and counted, and later calls give the first outcome.
    assert_eq!(client.score(record(0, 0)), Err(ScoreError::ShutDown));
    assert_eq!(client.shutdown(Duration::from_secs(2)), shut);
    let s = client.stats().scores;
    assert!(s.is_balanced());
    assert_eq!(s.dropped.shutdown, R + 1);
}

/// Dropping the last handle with records queued and a healthy server delivers them all.
#[test]
fn dropping_the_last_handle_delivers_what_is_queued() {
    let server = server();
    let client = builder(&server)
        .flush_interval(Duration::from_secs(60))
        .batch_size(10_000)
        .build()
        .expect("client");
    let (ok, errors) = score_from_threads(&client, THREADS, PER_THREAD);
    assert_eq!((ok, errors), (R, vec![]));
    let start = Instant::now();
    drop(client);
    let took = start.elapsed();
    let st = stored(&server);
    eprintln!("[drop, healthy server] drop took {took:?}, server stored {st:?}");
    assert_eq!((st.total, st.unique), (R, R));
    assert!(took < Duration::from_secs(2), "drop took {took:?}");
}

/// Dropping the last handle while requests hang returns within `shutdown_timeout` plus a
/// margin, and counts as abandoned exactly the records the server did not acknowledge.
#[test]
fn dropping_the_last_handle_with_requests_in_flight_does_not_hang() {
    const HANGING: usize = 4;
    const RECS: usize = 40;
    // A distinctive timeout, to find this client's shutdown line among the captured logs.
    const SHUTDOWN: Duration = Duration::from_millis(333);
    captured_logs();
    let server = server();
    server.set_responder(|request| (request.index < HANGING).then_some(Fault::Hang));
    let client = builder(&server)
        .max_in_flight(8)
        .request_timeout(Duration::from_secs(60))
        .shutdown_timeout(SHUTDOWN)
        .build()
        .expect("client");
    for n in 0..RECS {
        client.score(record(0, n)).expect("score");
    }
    assert!(
        server.wait_for_scores(RECS - HANGING, Duration::from_secs(10)),
        "the records that do not hang were not stored"
    );
    assert!(server.wait_for_requests(RECS, Duration::from_secs(5)));
    let acknowledged = server.status_count(201);
    assert_eq!(acknowledged, RECS - HANGING);
    let start = Instant::now();
    drop(client);
    let took = start.elapsed();
    assert!(
        took < SHUTDOWN + Duration::from_secs(1),
        "drop took {took:?}"
    );
    let lines = log_lines_containing("not delivered within 333ms");
    eprintln!("[drop with {HANGING} hanging] drop took {took:?}; log: {lines:?}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let expected = format!("shutdown: {} record(s) not delivered", RECS - acknowledged);
    assert!(
        lines[0].contains(&expected),
        "acknowledged records must not be counted as abandoned: {}",
        lines[0]
    );
}

/// `QueueFullPolicy::Block` under a dead server waits its bound, then drops and counts.
#[test]
fn blocking_policy_under_a_dead_server_waits_its_bound() {
    let server = server();
    server.set_responder(|_| Some(Fault::Hang));
    let client = builder(&server)
        .max_queue_size(1)
        .max_in_flight(1)
        .request_timeout(Duration::from_secs(60))
        .queue_full(QueueFullPolicy::Block(ms(50)))
        .build()
        .expect("client");
    // The worker holds up to its window (at least 1024 records); then the queue fills.
    let mut results = Vec::new();
    let start = Instant::now();
    while results.len() < 5_000 && !matches!(results.last(), Some(Err(ScoreError::QueueFull))) {
        results.push(client.score(record(0, results.len())));
    }
    assert!(
        matches!(results.last(), Some(Err(ScoreError::QueueFull))),
        "the queue never filled: {} accepted in {:?}",
        results.len(),
        start.elapsed()
    );
    let t = Instant::now();
    assert_eq!(client.score(record(1, 0)), Err(ScoreError::QueueFull));
    let waited = t.elapsed();
    assert!(waited >= ms(50) && waited < ms(500), "blocked {waited:?}");
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s:?}");
    assert_eq!(s.dropped.queue_full, 2, "{s:?}");
    assert_eq!(s.accepted, results.len() as u64 + 1);
}
