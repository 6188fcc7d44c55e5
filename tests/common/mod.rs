//! Helpers shared by the integration tests: servers, clients, waits, accounting checks and
//! captured logs. Every wait has a deadline; nothing sleeps to synchronise.
#![allow(dead_code)] // each test file uses its own subset

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pandaprobe::{Client, ClientBuilder, DropEvent, RecordStats, Stats};
use pandaprobe_testing::TestServer;

/// The longest any test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);
pub const PROJECT: &str = "sdk-tests";

/// A server that checks every rule of the contract but has no rate limits, stores traces at
/// once and takes scores for any trace: for tests about something else.
pub fn lenient_server() -> TestServer {
    TestServer::builder()
        .lenient()
        .start()
        .expect("test server")
}

/// A server that behaves like the real one: rate limits, trace storage lag, 500 for scores
/// of traces not stored yet.
pub fn faithful_server() -> TestServer {
    TestServer::start().expect("test server")
}

/// A client builder for `server`, with retries fast enough that tests never wait on backoff.
pub fn client_for(server: &TestServer) -> ClientBuilder {
    Client::builder()
        .api_key(server.api_key())
        .project_name(PROJECT)
        .endpoint(server.url())
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(100))
}

/// Polls `done` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every accepted record reached an outcome, and the identity holds.
#[track_caller]
pub fn assert_accounted(stats: &Stats) {
    for (what, s) in [("scores", &stats.scores), ("traces", &stats.traces)] {
        assert!(s.is_balanced(), "{what} not balanced: {s}");
        assert_eq!(s.pending, 0, "{what} still pending: {s}");
    }
}

/// All delivered, nothing dropped or retried.
#[track_caller]
pub fn assert_all_sent(s: &RecordStats, n: u64) {
    assert_eq!((s.accepted, s.sent, s.dropped.total()), (n, n, 0), "{s}");
}

/// Collects every drop event the hook sees.
#[derive(Clone, Default)]
pub struct Drops(Arc<Mutex<Vec<DropEvent>>>);

impl Drops {
    pub fn hook(&self) -> impl Fn(&DropEvent) + Send + Sync + 'static {
        let seen = Arc::clone(&self.0);
        move |event| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event.clone())
        }
    }

    pub fn events(&self) -> Vec<DropEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Log lines of target `pandaprobe` at INFO and above, from every thread, for the whole test
/// binary (a tracing subscriber can be installed once per process).
pub fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("pandaprobe=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
}

#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// The lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Logs {
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

// ---------------------------------------------------------------------------------------------
// Records told apart, producers on several threads, request ids and duplicates
// ---------------------------------------------------------------------------------------------

/// A trace id for scores of no trace this client sent (a lenient server takes any).
pub const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";

/// Records stay queued until a flush, a shutdown or a full queue: the batch threshold is never
/// reached and the interval never passes during a test.
pub fn parked(builder: ClientBuilder) -> ClientBuilder {
    builder
        .batch_size(1_000_000)
        .flush_interval(Duration::from_secs(3600))
}

/// A lenient server on which every request hangs until the client gives up or the server stops.
pub fn hanging_server() -> TestServer {
    let server = lenient_server();
    server.set_responder(|_| Some(pandaprobe_testing::Fault::Hang));
    server
}

/// Scores `{prefix}-{i}` for `i < n` on the shared trace id, each accepted.
pub fn score_batch(client: &pandaprobe::Client, prefix: &str, n: usize) {
    for i in 0..n {
        client
            .score(pandaprobe::Score::numeric(
                TRACE_ID,
                format!("{prefix}-{i}"),
                0.5,
            ))
            .unwrap_or_else(|e| panic!("{prefix}-{i}: {e}"));
    }
}

/// Score `(t, n)`, told apart from every other by its metadata `{"t": t, "n": n}`.
pub fn keyed_score(t: usize, n: usize) -> pandaprobe::Score {
    pandaprobe::Score::numeric(TRACE_ID, "keyed", 0.5).metadata(serde_json::json!({"t": t, "n": n}))
}

/// Scores `keyed_score(t, n)` for `n < per_thread` from each of `threads` threads at once;
/// returns how many `score()` calls succeeded and the errors of the others.
pub fn score_from_threads(
    client: &Client,
    threads: usize,
    per_thread: usize,
) -> (u64, Vec<pandaprobe::ScoreError>) {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut ok = 0;
                    let mut errors = Vec::new();
                    for n in 0..per_thread {
                        match client.score(keyed_score(t, n)) {
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
            .fold((0, Vec::new()), |(ok, mut errors), h| {
                let (o, e) = h.join().expect("a producer thread panicked");
                errors.extend(e);
                (ok + o, errors)
            })
    })
}

/// Scores the server stored, told apart by `X-Request-ID` (the same on every attempt of one
/// record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Rows stored.
    pub total: u64,
    /// Distinct records among them.
    pub unique: u64,
    /// Rows beyond the first of each record.
    pub duplicates: u64,
}

pub fn stored(server: &TestServer) -> Stored {
    let mut by_id = std::collections::HashMap::<String, u64>::new();
    for score in server.scores() {
        let id = score
            .request_id
            .expect("a stored score without X-Request-ID");
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

/// Every attempt of one record (the same body) carried the same `X-Request-ID`, a UUID, and
/// no two records shared one. Records must have distinct bodies (see [`keyed_score`]).
#[track_caller]
pub fn assert_request_ids_stable(server: &TestServer) {
    let mut ids_of =
        std::collections::HashMap::<bytes::Bytes, std::collections::HashSet<String>>::new();
    for request in server.requests() {
        let id = request
            .request_id()
            .expect("a request without X-Request-ID")
            .to_owned();
        pandaprobe::Uuid::parse_str(&id).expect("X-Request-ID is a UUID");
        ids_of.entry(request.body.clone()).or_default().insert(id);
    }
    let mut all = std::collections::HashSet::new();
    for (body, ids) in &ids_of {
        assert_eq!(
            ids.len(),
            1,
            "one record sent with several request ids {ids:?}: {}",
            String::from_utf8_lossy(body)
        );
        all.extend(ids.iter().cloned());
    }
    assert_eq!(all.len(), ids_of.len(), "two records shared a request id");
}

/// Records a shutdown gave up on, whether they were in flight or not.
pub fn abandoned(s: &RecordStats) -> u64 {
    s.dropped.shutdown + s.dropped.shutdown_in_flight
}

/// A trace with `spans` spans, ended, then scored three times right away.
pub fn trace_then_three_scores(client: &Client, spans: usize) -> pandaprobe::Uuid {
    let trace = client.start_trace("agent");
    for i in 0..spans {
        trace
            .span(format!("step {i}"), pandaprobe::SpanKind::Tool)
            .end();
    }
    let id = trace.trace_id();
    trace.end();
    for name in ["relevance", "helpfulness", "safety"] {
        if let Err(e) = client.score(pandaprobe::Score::numeric(id, name, 0.5)) {
            panic!("queued: {e}; {}", client.stats());
        }
    }
    id
}

/// The records pending and the timeout of a flush or shutdown that timed out; `None` for any
/// other outcome.
pub fn timed_out(result: &Result<(), pandaprobe::FlushError>) -> Option<(u64, Duration)> {
    match result {
        Err(pandaprobe::FlushError::Timeout {
            pending, timeout, ..
        }) => Some((*pending, *timeout)),
        _ => None,
    }
}
