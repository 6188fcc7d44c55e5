//! Retries against a failing server: each transient failure costs exactly one retry and no
//! duplicate, a 500's closed socket is never reused, broken connections and slow answers are
//! retried and counted as ambiguous (duplicates on the server never outnumber them), outages
//! are ridden out or end as `retries_exhausted` (by count and by time), final statuses are
//! dropped at once, and a 503's `Retry-After` is honoured, within its cap.
//!
//! Records are told apart on the server by their `X-Request-ID` (the same on every attempt of
//! one record) and by their metadata `{"t": thread, "n": i}`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{
    assert_accounted, assert_request_ids_stable, client_for, lenient_server, parked,
    score_from_threads, stored, Stored, TRACE_ID, WAIT,
};
use pandaprobe::{Client, DropReason, FlushError, Score};
use pandaprobe_testing::{Fault, TestServer, SCORES_PATH};

const THREADS: usize = 4;
const PER_THREAD: usize = 50;
const R: u64 = (THREADS * PER_THREAD) as u64;

/// Scores [`R`] records from [`THREADS`] threads, all accepted.
fn score_all(client: &Client) {
    assert_eq!(score_from_threads(client, THREADS, PER_THREAD), (R, vec![]));
}

/// The end of every test: balanced, nothing pending, every attempt of a record under one
/// request id, duplicates only where an attempt was ambiguous. Returns what the server stored.
#[track_caller]
fn accounted(client: &Client, server: &TestServer) -> Stored {
    let stats = client.stats();
    assert_accounted(&stats);
    assert_request_ids_stable(server);
    let st = stored(server);
    assert!(
        st.duplicates <= stats.scores.ambiguous,
        "{} duplicates but only {} ambiguous attempts: {stats}",
        st.duplicates,
        stats.scores.ambiguous
    );
    st
}

/// The first `n` score requests meet `fault`, then the server answers normally: [`R`] records
/// scored and flushed, and accounted. Returns the client, the server and what it stored.
fn through_faults(n: u64, fault: Fault) -> (Client, TestServer, Stored) {
    let server = lenient_server();
    server.fail_next_on(SCORES_PATH, n as usize, fault);
    let client = client_for(&server).build().expect("client");
    score_all(&client);
    client.flush(WAIT).expect("flush");
    let st = accounted(&client, &server);
    (client, server, st)
}

// ---------------------------------------------------------------------------------------------
// Transient statuses
// ---------------------------------------------------------------------------------------------

/// `FAILURES` requests get `status`, then the server answers normally: everything is delivered
/// once, every failure cost exactly one retry, and none of them was ambiguous.
fn transient_status_then_success(status: u16) {
    const FAILURES: u64 = 60;
    let (client, server, st) = through_faults(FAILURES, Fault::Status(status));
    let s = client.stats().scores;
    assert_eq!((s.accepted, s.sent, s.dropped.total()), (R, R, 0), "{s}");
    assert_eq!(s.retried, FAILURES, "one retry per failed attempt: {s}");
    // After a 500 the server closes the socket: a retry on that socket would fail with a reset
    // and count as ambiguous. None did, so every retry went out on a working connection.
    assert_eq!(s.ambiguous, 0, "{s}");
    assert_eq!(
        st,
        Stored {
            total: R,
            unique: R,
            duplicates: 0
        }
    );
    assert_eq!(server.status_count(status) as u64, FAILURES);
    assert_eq!(server.status_count(201) as u64, R);
    assert_eq!(server.request_count() as u64, R + FAILURES);
    assert_eq!(client.stats().requests, R + FAILURES);
}

#[test]
fn status_500_then_201() {
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

/// The server closes the kept-alive connection after a 500, without saying so: the retry, and
/// the records after it, go out on working connections without a single extra failure.
#[test]
fn after_a_500_the_next_requests_do_not_fail_on_the_closed_socket() {
    let server = lenient_server();
    let client = client_for(&server)
        .max_in_flight(1)
        .build()
        .expect("client");
    let score = |name: String| {
        client
            .score(Score::numeric(TRACE_ID, name, 0.5))
            .expect("accepted")
    };
    (0..3).for_each(|i| score(format!("warm-{i}")));
    client
        .flush(WAIT)
        .expect("warm-up: a kept-alive connection exists");

    server.fail_next(1, Fault::Status(500));
    score("after-500".into());
    client
        .flush(WAIT)
        .expect("the retry after the 500 is delivered");
    (0..3).for_each(|i| score(format!("later-{i}")));
    client.flush(WAIT).expect("later records delivered");

    let statuses: Vec<Option<u16>> = server.requests().iter().map(|r| r.status).collect();
    let mut expected = vec![Some(201); 3];
    expected.extend([Some(500), Some(201)]);
    expected.extend(vec![Some(201); 3]);
    assert_eq!(statuses, expected, "exactly one failed attempt");
    let requests = server.requests();
    assert_eq!(
        requests[3].request_id(),
        requests[4].request_id(),
        "the retry of the same record"
    );
    assert_eq!(requests[3].body, requests[4].body);
    let s = client.stats().scores;
    assert_eq!((s.accepted, s.sent, s.dropped.total()), (7, 7, 0), "{s}");
    assert_eq!(
        (s.retried, s.ambiguous),
        (1, 0),
        "no attempt met the closed socket: {s}"
    );
    assert_eq!(server.score_count(), 7);
}

// ---------------------------------------------------------------------------------------------
// Broken connections and slow answers
// ---------------------------------------------------------------------------------------------

/// The server reads the request and closes the connection without an answer: the attempt is
/// ambiguous, retried, delivered; nothing was stored twice (a reset stores nothing).
#[test]
fn connection_reset_is_retried_and_ambiguous() {
    const RESETS: u64 = 40;
    let (client, server, st) = through_faults(RESETS, Fault::Reset);
    let s = client.stats().scores;
    assert_eq!((s.sent, s.dropped.total()), (R, 0), "{s}");
    assert_eq!(s.retried, RESETS, "{s}");
    assert_eq!(
        s.ambiguous, RESETS,
        "a reset after sending is ambiguous: {s}"
    );
    assert_eq!(
        st,
        Stored {
            total: R,
            unique: R,
            duplicates: 0
        }
    );
    assert_eq!(server.request_count() as u64, R + RESETS);
}

/// The server stores the record and then closes the connection: the retry stores it again.
/// Every duplicate is covered by an ambiguous retry.
#[test]
fn store_then_reset_makes_counted_duplicates() {
    const RESETS: u64 = 40;
    let (client, _server, st) = through_faults(RESETS, Fault::StoreThenReset);
    let s = client.stats().scores;
    assert_eq!((s.sent, s.dropped.total()), (R, 0), "{s}");
    assert_eq!(s.ambiguous, RESETS, "{s}");
    assert_eq!(
        st,
        Stored {
            total: R + RESETS,
            unique: R,
            duplicates: RESETS
        }
    );
}

/// Answers slower than the request timeout: the client gives up (ambiguous), retries, and the
/// slow attempt still stores: duplicates, each one covered by an ambiguous retry.
#[test]
fn answers_slower_than_the_request_timeout_are_retried_and_counted() {
    const SLOW: u64 = 20;
    let server = lenient_server();
    server.fail_next_on(
        SCORES_PATH,
        SLOW as usize,
        Fault::Delay(Duration::from_millis(600)),
    );
    let client = client_for(&server)
        .request_timeout(Duration::from_millis(250))
        .build()
        .expect("client");
    score_all(&client);
    client.flush(WAIT).expect("flush");
    // The slow attempts store when their delay ends, whether or not the client still listens.
    assert!(
        server.wait_for_scores((R + SLOW) as usize, WAIT),
        "the delayed attempts did not all store: {}",
        server.score_count()
    );
    let st = accounted(&client, &server);
    let s = client.stats().scores;
    assert_eq!((s.sent, s.dropped.total()), (R, 0), "{s}");
    assert!(
        s.ambiguous >= SLOW,
        "every timed-out attempt is ambiguous: {s}"
    );
    assert_eq!(st.unique, R);
    // Each slow attempt stored once more (a normal answer that misses the timeout on a loaded
    // machine adds one, covered by its own ambiguous retry).
    assert!(st.duplicates >= SLOW, "{st:?}");
}

// ---------------------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------------------

/// Nothing listens when the records are scored; the server comes up; everything is delivered.
#[test]
fn server_not_listening_at_start_then_up() {
    let server = TestServer::builder()
        .lenient()
        .bind_later()
        .start()
        .expect("reserve a port");
    let client = client_for(&server)
        .max_retries(100)
        .build()
        .expect("client");
    score_all(&client);
    // Every record has failed at least once against the closed port.
    assert!(
        common::wait_until(WAIT, || client.stats().scores.retried >= R),
        "records were not attempted: {}",
        client.stats().scores
    );
    server.restart().expect("start listening");
    client.flush(WAIT).expect("flush");
    let st = accounted(&client, &server);
    let s = client.stats().scores;
    assert_eq!((s.sent, s.dropped.total()), (R, 0), "{s}");
    assert_eq!(
        s.ambiguous, 0,
        "a refused connection never reached the server: {s}"
    );
    assert_eq!(
        st,
        Stored {
            total: R,
            unique: R,
            duplicates: 0
        }
    );
    assert_eq!(server.request_count() as u64, R);
}

/// The server goes away mid-run and comes back: delivered within the retry limits.
#[test]
fn server_goes_away_mid_run_and_comes_back() {
    let server = lenient_server();
    let client = client_for(&server)
        .max_retries(100)
        .build()
        .expect("client");
    let half = |range: std::ops::Range<usize>| {
        for n in range {
            for t in 0..THREADS {
                client.score(common::keyed_score(t, n)).expect("accepted");
            }
        }
    };
    half(0..PER_THREAD / 2);
    client.flush(WAIT).expect("the first half");
    server.stop();
    let before = client.stats().scores.retried;
    half(PER_THREAD / 2..PER_THREAD);
    assert!(
        common::wait_until(WAIT, || client.stats().scores.retried >= before + R / 2),
        "records were not attempted while the server was down"
    );
    server.restart().expect("listen again");
    client.flush(WAIT).expect("flush");
    let st = accounted(&client, &server);
    let s = client.stats().scores;
    assert_eq!((s.sent, s.dropped.total()), (R, 0), "{s}");
    assert_eq!(st.unique, R);
}

/// The server stays down: with `max_retries(2)` every record is tried exactly three times and
/// dropped as retries exhausted; flush says so.
#[test]
fn server_kept_down_drops_as_retries_exhausted_by_count() {
    let server = lenient_server();
    server.stop();
    // Parked: nothing is sent before the flush asks for it.
    let client = parked(client_for(&server))
        .max_retries(2)
        .build()
        .expect("client");
    score_all(&client);
    assert_eq!(
        client.flush(WAIT),
        Err(FlushError::Dropped {
            dropped: R,
            reason: DropReason::RetriesExhausted
        })
    );
    accounted(&client, &server);
    let stats = client.stats();
    let s = stats.scores;
    assert_eq!(
        (s.sent, s.dropped.retries_exhausted, s.dropped.total()),
        (0, R, R),
        "{s}"
    );
    assert_eq!(s.retried, 2 * R, "{s}");
    assert_eq!(
        stats.requests,
        3 * R,
        "exactly 1 + max_retries attempts each"
    );
    assert_eq!(server.score_count(), 0);
}

/// The server stays down: with a short `retry_max_elapsed` the records are dropped by time.
#[test]
fn server_kept_down_drops_as_retries_exhausted_by_time() {
    let max_elapsed = Duration::from_secs(1);
    let server = lenient_server();
    server.stop();
    let client = parked(client_for(&server))
        .max_retries(1_000)
        .retry_max_elapsed(max_elapsed)
        .build()
        .expect("client");
    let started = Instant::now();
    score_all(&client);
    assert_eq!(
        client.flush(WAIT),
        Err(FlushError::Dropped {
            dropped: R,
            reason: DropReason::RetriesExhausted
        })
    );
    let elapsed = started.elapsed();
    accounted(&client, &server);
    let s = client.stats().scores;
    assert_eq!((s.sent, s.dropped.retries_exhausted), (0, R), "{s}");
    assert!(s.retried > 2 * R, "retried until the time ran out: {s}");
    assert!(
        elapsed >= max_elapsed,
        "dropped after {elapsed:?}, before the retry time ran out"
    );
    assert!(
        elapsed < max_elapsed + Duration::from_secs(2),
        "dropped only after {elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Final answers
// ---------------------------------------------------------------------------------------------

/// A final status: dropped at once as rejected, one request per record, and flush says so.
/// The client is parked: nothing is sent before the flush asks for it, so it sees every drop.
fn rejected_at_once(server: &TestServer, client: &Client, status: u16) {
    score_all(client);
    assert_eq!(
        client.flush(WAIT),
        Err(FlushError::Dropped {
            dropped: R,
            reason: DropReason::Rejected
        })
    );
    accounted(client, server);
    let stats = client.stats();
    let s = stats.scores;
    assert_eq!(
        (s.sent, s.dropped.rejected, s.dropped.total()),
        (0, R, R),
        "{s}"
    );
    assert_eq!(s.retried, 0, "{s}");
    assert_eq!(stats.requests, R, "exactly one request per record");
    assert_eq!(server.request_count() as u64, R);
    assert_eq!(server.status_count(status) as u64, R);
    assert_eq!(server.score_count(), 0);
    // Nothing more at shutdown either.
    client.shutdown(WAIT).expect("nothing left to deliver");
    assert_eq!(server.request_count() as u64, R);
}

#[test]
fn status_401_is_rejected_at_once() {
    let server = lenient_server();
    let client = parked(client_for(&server))
        .api_key("sk_pp_revoked")
        .build()
        .expect("client");
    rejected_at_once(&server, &client, 401);
}

#[test]
fn status_422_is_rejected_at_once() {
    let server = lenient_server();
    server.set_responder(|request| (request.path == SCORES_PATH).then_some(Fault::Status(422)));
    let client = parked(client_for(&server)).build().expect("client");
    rejected_at_once(&server, &client, 422);
}

/// A client whose one record was dropped (a 422) before anything asked about it: the worker
/// took the record at once (`batch_size(1)`) and dropped it before a flush or shutdown came.
fn client_with_a_drop_already_counted(server: &TestServer) -> Client {
    server.set_responder(|_| Some(Fault::Status(422)));
    let client = client_for(server).batch_size(1).build().expect("client");
    client
        .score(Score::numeric(TRACE_ID, "rejected", 0.5))
        .expect("accepted");
    assert!(
        common::wait_until(WAIT, || client.stats().scores.dropped.rejected == 1),
        "the 422 was not answered"
    );
    client
}

const ONE_REJECTED: Result<(), FlushError> = Err(FlushError::Dropped {
    dropped: 1,
    reason: DropReason::Rejected,
});

/// `flush()` does not return `Ok` when a record scored before the call was dropped, whether
/// the drop came while it waited or before: each drop is reported once, to the first flush
/// or shutdown whose records include it.
#[test]
fn flush_reports_a_drop_that_came_before_it() {
    let server = lenient_server();
    let client = client_with_a_drop_already_counted(&server);
    assert_eq!(client.flush(WAIT), ONE_REJECTED);
    assert_eq!(client.flush(WAIT), Ok(()), "reported once");
}

/// The same for `shutdown()`.
#[test]
fn shutdown_reports_a_drop_that_came_before_it() {
    let server = lenient_server();
    let client = client_with_a_drop_already_counted(&server);
    assert_eq!(client.shutdown(WAIT), ONE_REJECTED);
}

// ---------------------------------------------------------------------------------------------
// Retry-After on a 503
// ---------------------------------------------------------------------------------------------

/// The first request gets a 503 with the `Retry-After` that `make` builds from the answer's
/// time; returns when the two attempts of that one record reached the server, and the value.
fn retry_after_503(make: fn(SystemTime) -> String) -> (Vec<(Instant, SystemTime)>, String) {
    let server = lenient_server();
    let times = Arc::new(Mutex::new(Vec::new()));
    let value = Arc::new(Mutex::new(None));
    {
        let (times, value) = (Arc::clone(&times), Arc::clone(&value));
        server.set_responder(move |_| {
            let now = (Instant::now(), SystemTime::now());
            let mut times = times.lock().expect("times");
            times.push(now);
            (times.len() == 1).then(|| {
                let retry_after = make(now.1);
                *value.lock().expect("value") = Some(retry_after.clone());
                Fault::RetryAfter {
                    status: 503,
                    retry_after,
                }
            })
        });
    }
    let client = client_for(&server)
        .max_retry_after(Duration::from_secs(10))
        .build()
        .expect("client");
    client
        .score(Score::numeric(TRACE_ID, "retry-after", 0.5))
        .expect("accepted");
    client.flush(WAIT).expect("delivered after the pause");
    let s = client.stats().scores;
    assert_eq!((s.sent, s.retried), (1, 1), "{s}");
    let times = times.lock().expect("times").clone();
    assert_eq!(times.len(), 2);
    let value = value
        .lock()
        .expect("value")
        .clone()
        .expect("a Retry-After was sent");
    (times, value)
}

#[test]
fn retry_after_seconds_on_a_503_is_honoured() {
    let times = retry_after_503(|_| "1".to_owned()).0;
    let pause = times[1].0 - times[0].0;
    assert!(
        pause >= Duration::from_secs(1),
        "retried {pause:?} after Retry-After: 1"
    );
    assert!(
        pause < Duration::from_secs(3),
        "paused {pause:?} for Retry-After: 1"
    );
}

#[test]
fn retry_after_http_date_on_a_503_is_honoured() {
    // An HTTP date has whole seconds: `now + 2 s` truncated is between 1 and 2 s away.
    let (times, value) =
        retry_after_503(|now| httpdate::fmt_http_date(now + Duration::from_secs(2)));
    let until = httpdate::parse_http_date(&value).expect("a valid HTTP date");
    let ((t0, _), (t1, t1_wall)) = (times[0], times[1]);
    // The wall clock and the monotonic one may drift apart by a hair while the test runs.
    assert!(
        t1_wall + Duration::from_millis(20) >= until,
        "retried {:?} before the Retry-After date",
        until.duration_since(t1_wall).unwrap_or_default()
    );
    assert!(t1 - t0 < Duration::from_secs(4), "paused {:?}", t1 - t0);
}

/// `Retry-After: 86400` on a 503 is capped by `max_retry_after`: the pause is the cap.
#[test]
fn a_hostile_retry_after_on_a_503_is_capped() {
    let cap = Duration::from_secs(1);
    let server = lenient_server();
    server.fail_next_on(
        SCORES_PATH,
        8,
        Fault::RetryAfter {
            status: 503,
            retry_after: "86400".to_owned(),
        },
    );
    let client = client_for(&server)
        .max_retry_after(cap)
        .build()
        .expect("client");
    let started = Instant::now();
    score_all(&client);
    client.flush(WAIT).expect("flush");
    let elapsed = started.elapsed();
    let st = accounted(&client, &server);
    let s = client.stats().scores;
    assert_eq!((s.sent, s.retried), (R, 8), "{s}");
    assert_eq!(
        st,
        Stored {
            total: R,
            unique: R,
            duplicates: 0
        }
    );
    assert!(
        elapsed >= cap,
        "the 503's Retry-After was ignored: {elapsed:?}"
    );
    assert!(
        elapsed < cap + Duration::from_secs(2),
        "took {elapsed:?} despite the cap"
    );
}
