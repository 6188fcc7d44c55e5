//! Rate limits used to the last request: against the test server's fixed-window limiter (the
//! real server's semantics: a window opens at the first request after the last one expired,
//! a 429 without `Retry-After` names the limit), a 429 stops sending on that path at once,
//! answers already in flight do not reopen it, each window is used to its limit and no more,
//! and clients sharing a key stay polite. Windows are short here; the figures at the real
//! 60 s scale come from `cargo run --release --example rate_limit_windows -- --window 60`.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{client_for, wait_until, WAIT};
use pandaprobe::{Client, Score, Uuid};
use pandaprobe_testing::{Fault, TestServer, SCORES_PATH, TRACES_PATH};

const LIMIT: u32 = 200;

fn limited_server(window: Duration) -> TestServer {
    TestServer::builder()
        .lenient()
        .rate_limit(SCORES_PATH, LIMIT, window)
        .start()
        .expect("test server")
}

fn score_n(client: &Client, n: usize) {
    let trace_id = Uuid::new_v4();
    for i in 0..n {
        client
            .score(Score::numeric(trace_id, format!("s{i}"), 0.5))
            .expect("queued");
    }
}

/// When the server stored each score, in order.
fn stored_times(server: &TestServer) -> Vec<Instant> {
    let mut times: Vec<Instant> = server.scores().iter().filter_map(|s| s.stored_at).collect();
    times.sort();
    times
}

struct Run {
    delivered: usize,
    requests: usize,
    refused: usize,
    /// From the first stored score (the first window's opening) to the last.
    span: Duration,
}

impl Run {
    fn of(server: &TestServer) -> Run {
        let times = stored_times(server);
        let span = match (times.first(), times.last()) {
            (Some(first), Some(last)) => last.saturating_duration_since(*first),
            _ => Duration::ZERO,
        };
        Run {
            delivered: server.score_count(),
            requests: server.request_count(),
            refused: server.status_count(429),
            span,
        }
    }

    fn requests_per_score(&self) -> f64 {
        self.requests as f64 / self.delivered.max(1) as f64
    }
}

/// `1000 delivered, 1032 requests (1.032 per score), 32 answered 429, last after 16.17s`
impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} delivered, {} requests ({:.3} per score), {} answered 429, last after {:?}",
            self.delivered,
            self.requests,
            self.requests_per_score(),
            self.refused,
            self.span
        )
    }
}

#[test]
fn one_client_fills_each_window_exactly_after_learning_the_limit() {
    // Five windows' worth: the ideal is the last score at the start of the fifth window.
    let window = Duration::from_secs(4);
    let server = limited_server(window);
    let client = client_for(&server).build().expect("client");
    let n = 5 * LIMIT as usize;
    score_n(&client, n);
    client.flush(6 * window).expect("all delivered");
    let run = Run::of(&server);
    let ideal = 4 * window;
    eprintln!("one client: {run} (ideal {ideal:?})");
    assert_eq!(run.delivered, n);
    assert!(
        run.requests_per_score() <= 1.05,
        "{:.3}",
        run.requests_per_score()
    );
    assert!(
        run.span >= ideal - window / 4,
        "faster than the limit allows?"
    );
    assert!(
        run.span <= ideal + window / 4,
        "{:?} after the ideal",
        run.span - ideal
    );
    let stats = client.stats();
    assert_eq!(stats.scores.dropped.total(), 0, "{stats}");
}

#[test]
fn three_clients_sharing_a_key_waste_little() {
    let window = Duration::from_secs(2);
    let server = Arc::new(limited_server(window));
    let n = 5 * LIMIT as usize;
    let clients: Vec<Client> = (0..3)
        .map(|_| client_for(&server).build().expect("client"))
        .collect();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let share = n / 3 + usize::from(i < n % 3);
            thread::spawn(move || {
                score_n(&client, share);
                client.flush(8 * window)
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread").expect("all delivered");
    }
    let run = Run::of(&server);
    eprintln!("three clients: {run}");
    assert_eq!(run.delivered, n);
    assert!(
        run.requests_per_score() <= 1.15,
        "{:.3}",
        run.requests_per_score()
    );
}

/// The first window at a small scale (25 per 5 s), where a burst before the limit is known
/// would be a large share of every window: `n` scores from `clients` clients sharing a key.
fn small_window(clients: usize, n: usize) -> Run {
    let window = Duration::from_secs(5);
    let server = Arc::new(
        TestServer::builder()
            .lenient()
            .rate_limit(SCORES_PATH, 25, window)
            .start()
            .expect("test server"),
    );
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let client = client_for(&server).build().expect("client");
            let share = n / clients + usize::from(i < n % clients);
            thread::spawn(move || {
                score_n(&client, share);
                client.flush(12 * window)
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread").expect("all delivered");
    }
    Run::of(&server)
}

#[test]
fn a_small_window_costs_one_client_almost_nothing_from_the_start() {
    let run = small_window(1, 100);
    eprintln!("25 per 5 s, one client: {run}");
    assert_eq!(run.delivered, 100);
    assert!(run.requests_per_score() <= 1.05, "{run}");
}

#[test]
fn a_small_window_shared_by_three_clients_costs_little() {
    let run = small_window(3, 100);
    eprintln!("25 per 5 s, three clients: {run}");
    assert_eq!(run.delivered, 100);
    assert!(run.requests_per_score() <= 1.15, "{run}");
}

#[test]
fn the_configured_limit_means_no_429_at_all() {
    let window = Duration::from_secs(1);
    let server = limited_server(window);
    let client = client_for(&server)
        .scores_rate_limit(LIMIT, window)
        .build()
        .expect("client");
    let n = 3 * LIMIT as usize;
    score_n(&client, n);
    client.flush(6 * window).expect("all delivered");
    let run = Run::of(&server);
    eprintln!("configured limit: {run}");
    assert_eq!((run.delivered, run.refused), (n, 0));
    assert_eq!(run.requests, n);
}

#[test]
fn answers_of_500_count_in_the_window_like_the_real_limiter_counts_them() {
    // A score whose trace is not stored yet gets a 500 from the handler, after the limiter
    // let it through: it used a request of the window.
    let window = Duration::from_secs(1);
    let server = TestServer::builder()
        .rate_limit(SCORES_PATH, LIMIT, window)
        .trace_store_time(Duration::from_millis(400), Duration::ZERO)
        .start()
        .expect("test server");
    let client = client_for(&server)
        .scores_rate_limit(LIMIT, window)
        .build()
        .expect("client");
    // Another process sent the trace, so this client does not know to wait for it.
    let other = client_for(&server).build().expect("client");
    let trace = other.start_trace("slow to store");
    trace.end();
    other.flush(WAIT).expect("trace accepted");
    for i in 0..LIMIT {
        client
            .score(Score::numeric(trace.trace_id(), format!("s{i}"), 0.5))
            .expect("queued");
    }
    client.flush(WAIT).expect("all delivered");
    assert!(server.status_count(500) >= 1, "the first scores came early");
    assert_eq!(server.status_count(429), 0);
    assert_eq!(server.score_count(), LIMIT as usize);
}

#[test]
fn a_limited_traces_path_does_not_hold_up_scores() {
    let server = TestServer::builder()
        .lenient()
        .rate_limit(TRACES_PATH, 2, Duration::from_secs(60))
        .start()
        .expect("test server");
    let client = client_for(&server)
        .shutdown_timeout(Duration::from_millis(100)) // the three traces are not waited for
        .build()
        .expect("client");
    for _ in 0..5 {
        client.start_trace("t").end();
    }
    score_n(&client, 20);
    // Three traces wait a whole minute for the next window; the scores do not.
    assert!(
        wait_until(WAIT, || {
            let stats = client.stats();
            stats.scores.sent == 20 && stats.traces.sent == 2
        }),
        "scores are not held up: {}",
        client.stats()
    );
    assert_eq!(server.trace_count(), 2);
    assert!(server.status_count(429) <= 3, "one burst, no storm");
    let stats = client.stats();
    assert_eq!((stats.traces.sent, stats.traces.pending), (2, 3), "{stats}");
}

#[test]
fn retry_after_on_a_429_is_honoured_and_capped() {
    let server = common::lenient_server();
    server.fail_next_on(
        SCORES_PATH,
        1,
        Fault::RetryAfter {
            status: 429,
            retry_after: "2".into(),
        },
    );
    let client = client_for(&server)
        .max_in_flight(1)
        .build()
        .expect("client");
    let start = Instant::now();
    score_n(&client, 3);
    client.flush(WAIT).expect("delivered");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");

    // A hostile Retry-After is capped by max_retry_after.
    server.fail_next_on(
        SCORES_PATH,
        1,
        Fault::RetryAfter {
            status: 429,
            retry_after: "86400".into(),
        },
    );
    let client = client_for(&server)
        .max_retry_after(Duration::from_secs(1))
        .build()
        .expect("client");
    let start = Instant::now();
    score_n(&client, 1);
    client.flush(WAIT).expect("delivered");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_window_of_unknown_shape_pauses_the_path_with_one_probe_at_a_time() {
    // A 429 whose body names no limit (a proxy's, say): the path pauses, probes one request
    // at a time, and the pause grows while the probes meet the closed window.
    let server = common::lenient_server();
    let closed_until = Instant::now() + Duration::from_millis(1500);
    server.set_responder(move |_| {
        (Instant::now() < closed_until).then(|| Fault::Raw {
            status: 429,
            headers: vec![],
            body: "slow down".into(),
        })
    });
    let client = client_for(&server)
        .retry_backoff(Duration::from_millis(100), Duration::from_millis(100))
        .build()
        .expect("client");
    score_n(&client, 100);
    client.flush(WAIT).expect("delivered");
    assert_eq!(server.score_count(), 100);
    let refused = server.status_count(429);
    // The burst that met the window (up to 32 in flight), then one probe per pause:
    // 100 ms, 200, 400, 800 … no storm.
    assert!(refused <= 32 + 6, "{refused} answers of 429");
    assert!(wait_until(WAIT, || client.stats().scores.pending == 0));
}
