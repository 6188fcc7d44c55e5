//! The scoring hot path and end-to-end delivery, against the in-process test server
//! (`pandaprobe-testing`).
//!
//! ```text
//! cargo bench --bench score                   # everything, about 2.5 minutes
//! cargo bench --bench score -- --quick        # everything, quick estimates, about 20 s
//! cargo bench --bench score -- score/         # only the score() groups
//! cargo bench --bench score -- delivery       # delivery, the bare-reqwest reference, the ratio
//! cargo bench --bench score -- flush          # flush latency
//! ```
//!
//! The server here is idealised on purpose: `lenient()` (no rate limits, scores accepted for
//! any trace, traces stored at once) and `record_requests(false)`. The real server takes 200
//! scores a minute per key and stores about 70 scores a second, so against it the client is
//! never the bottleneck: these figures measure the client's own cost, and what it leaves of
//! what loopback HTTP on this machine can do.
//!
//! Groups:
//!
//! - `score/*`: one `Client::score` call. `accept_*` run on an accepting client whose worker is
//!   running and delivering to the test server; every measured call must be accepted (checked:
//!   no `queue_full` drop). Each measured batch gets a fresh client whose queue holds the whole
//!   batch, so the accepting path is measured without waiting for delivery between batches.
//!   `*_all_cores`: one producer per core on one client, the cost of one call on one thread.
//!   `queue_full*` is the drop path (server hanging, tiny queue, pre-filled; checked: every
//!   measured call dropped). `disabled*` is `Client::disabled()`.
//! - `body/*`: validating and serializing one score body (`Score::to_body`, checked byte for
//!   byte against what the SDK sends), and the per-record request id.
//! - `delivery/*`: records delivered per second (first `score()` to `flush()` returning, every
//!   record counted by the server), by batch size and by in-flight limit, and the reference: a
//!   bare reqwest loop posting the same body with the same headers to the same server with the
//!   same number in flight. `delivery/ratio` (printed, not a criterion bench) alternates the
//!   SDK with its default settings and the bare loop with 32 in flight, in the same run, and
//!   prints SDK/bare.
//! - `flush/*`: `flush()` with 1,000 queued scores and a 10 s flush interval;
//!   `flush/latency` (printed) also reports how long after the server stored the last score
//!   the flush returned.
//!
//! The p99 of `score()` is in `examples/latency.rs`; memory per queued score in
//! `examples/memory.rs`; the Python comparison in `examples/compare_python.rs`.
//!
//! ## Measured
//!
//! ROUGH: 2 vCPU AMD EPYC (KVM guest), Linux, rustc 1.95.0, `cargo bench --bench score`
//! (2 min 54 s), 2026-11-29, with other engineers' builds still taking part of the CPU (load
//! average about 2 during the run; an earlier run at load 8 was 2-7x slower throughout). To
//! be re-measured on a quiet machine. Criterion medians.
//!
//! ```text
//! score/accept_str              281 ns     score/queue_full           85 ns
//! score/accept_typed             81 ns     score/queue_full_str      260 ns
//! score/accept_owned            365 ns     score/disabled             18 ns
//! score/accept_typed_all_cores  135 ns     score/disabled_str         74 ns
//! score/accept_str_all_cores    486 ns     (all_cores: per call, on each of 2 threads)
//! body/serialize                435 ns     body/serialize_numeric    420 ns
//! body/request_id                76 ns
//!
//! delivery, scores/s (median)       SDK                       bare reqwest, same in flight
//!   batch_size 1/10/100/1000        34k / 34k / 34k / 33k     (in flight 32)
//!   in flight 1 / 4 / 16 / 32 / 64  8.3k/19k/28k/31k/33k      9.7k/24k/35k/31k/34k
//! delivery/ratio (7 alternating rounds of 20,000, defaults): SDK 29.8k scores/s, bare 34.1k
//!   req/s, SDK/bare median 0.87 (rounds 0.84 .. 0.91)
//! flush/1000_queued: 32.5 ms with a 10 s flush interval (flush/latency: median 47 ms, and it
//!   returns 0.22 ms median after the server stored the last score)
//! ```
//!
//! The `str` paths (`Score::new` with a NUMERIC value as text) are slower than the typed ones
//! by more than the UUID parse: validating the value (`python_float::parse`) makes two
//! allocations per call (`examples/latency.rs` counts them), where the typed path makes none.

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use pandaprobe::{
    Client, ClientBuilder, Score, ScoreError, DEFAULT_BATCH_SIZE, DEFAULT_MAX_IN_FLIGHT,
};
use pandaprobe_testing::{Fault, TestServer, SCORES_PATH};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use uuid::Uuid;

const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
const PROJECT: &str = "bench";
/// The largest queue one accepting client gets; a larger batch is split over several clients.
const MAX_ACCEPT_QUEUE: u64 = 2_000_000;
/// Queue capacity of the delivery clients: bigger than any measured batch, so the producer
/// never waits and nothing is dropped (delivery, not the queue, is what is measured).
const DELIVERY_QUEUE: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Ends the bench run with a message: a bench whose precondition failed measures nothing.
fn fail(what: &str, detail: impl std::fmt::Display) -> ! {
    eprintln!("score bench: {what}: {detail}");
    std::process::exit(1)
}

/// `Result::unwrap` with a message and without a panic inside criterion.
trait OrFail<T> {
    fn or_fail(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> T {
        self.unwrap_or_else(|e| fail(what, e))
    }
}

/// Fails the run with `detail()` unless `ok`.
fn check(ok: bool, what: &str, detail: impl FnOnce() -> String) {
    if !ok {
        fail(what, detail());
    }
}

/// The idealised server the figures are measured against: no rate limits, scores accepted for
/// any trace, requests not kept (stored scores are forgotten with `reset_records`).
fn start_server() -> TestServer {
    TestServer::builder()
        .lenient()
        .record_requests(false)
        .start()
        .or_fail("start the test server")
}

fn builder(server: &TestServer) -> ClientBuilder {
    Client::builder()
        .api_key(server.api_key())
        .project_name(PROJECT)
        .endpoint(server.url())
}

fn str_score() -> Score {
    Score::new(black_box(TRACE_ID), "name", "0.5")
}

/// Read through `black_box(&..)`: `black_box(value)` stores the id and the score reloads it
/// at another offset at once, a store-forwarding stall that would be charged to `score()`.
static TRACE_UUID: Uuid = Uuid::from_u128(0x29c1_60fc_44bc_41ad_8bec_fa67_8ddb_1f9a);

fn typed_score() -> Score {
    Score::numeric(*black_box(&TRACE_UUID), "name", *black_box(&0.5))
}

/// A typical score from application code: owned trace id text, a 16-char owned name and a
/// 4-char owned value.
fn owned_score() -> Score {
    Score::new(
        black_box(TRACE_ID).to_owned(),
        black_box("answer_relevance").to_owned(),
        black_box("0.42").to_owned(),
    )
}

/// A client that accepts `capacity` scores without dropping; dropping it abandons what is
/// still queued at once (outside the measurement).
fn accepting_client(server: &TestServer, capacity: u64) -> Client {
    builder(server)
        .max_queue_size(usize::try_from(capacity.max(1024)).or_fail("capacity fits usize"))
        .shutdown_timeout(Duration::from_millis(1))
        .build()
        .or_fail("build an accepting client")
}

fn assert_all_accepted(client: &Client, expected: u64, refused: u64) {
    let stats = client.stats().scores;
    check(
        refused == 0
            && stats.dropped.queue_full == 0
            && stats.accepted == expected
            && stats.is_balanced(),
        "the accepting path refused or dropped",
        || format!("{refused} refused of {expected}: {stats}"),
    );
}

/// `threads` producers at once on one client, each making `iters` calls; returns the mean of
/// the producers' own elapsed times (so criterion shows the cost of one call on one thread).
fn produce(server: &TestServer, threads: usize, iters: u64, make: fn() -> Score) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(MAX_ACCEPT_QUEUE / threads as u64);
        left -= chunk;
        let client = accepting_client(server, chunk * threads as u64);
        let barrier = Barrier::new(threads);
        let (elapsed, refused) = std::thread::scope(|s| {
            let producers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let mut refused = 0u64;
                        let start = Instant::now();
                        for _ in 0..chunk {
                            if client.score(make()).is_err() {
                                refused += 1;
                            }
                        }
                        (start.elapsed(), refused)
                    })
                })
                .collect();
            producers
                .into_iter()
                .fold((Duration::ZERO, 0), |(d, r), p| {
                    let (pd, pr) = p
                        .join()
                        .unwrap_or_else(|_| fail("a producer thread", "panicked"));
                    (d + pd, r + pr)
                })
        });
        assert_all_accepted(&client, chunk * threads as u64, refused);
        total += elapsed / threads as u32;
        drop(client);
        server.reset_records();
    }
    total
}

// ---------------------------------------------------------------------------------------------
// score/*
// ---------------------------------------------------------------------------------------------

fn score_benches(c: &mut Criterion) {
    let server = start_server();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut g = c.benchmark_group("score");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat);

    g.bench_function("accept_str", |b| {
        b.iter_custom(|iters| produce(&server, 1, iters, str_score))
    });
    g.bench_function("accept_typed", |b| {
        b.iter_custom(|iters| produce(&server, 1, iters, typed_score))
    });
    g.bench_function("accept_owned", |b| {
        b.iter_custom(|iters| produce(&server, 1, iters, owned_score))
    });
    g.bench_function("accept_typed_all_cores", |b| {
        b.iter_custom(|iters| produce(&server, threads, iters, typed_score))
    });
    g.bench_function("accept_str_all_cores", |b| {
        b.iter_custom(|iters| produce(&server, threads, iters, str_score))
    });
    drop(server);

    // The drop path: the server never answers, the worker holds all it may, the queue is full.
    let hanging = start_server();
    hanging.set_responder(|_| Some(Fault::Hang));
    let full = builder(&hanging)
        .max_queue_size(16)
        .batch_size(1)
        .request_timeout(Duration::from_secs(3600))
        .shutdown_timeout(Duration::from_millis(1))
        .build()
        .or_fail("build the queue-full client");
    fill_queue(&full, &hanging);
    let before = full.stats().scores;
    g.bench_function("queue_full", |b| {
        b.iter(|| black_box(full.score(typed_score())))
    });
    g.bench_function("queue_full_str", |b| {
        b.iter(|| black_box(full.score(str_score())))
    });
    let after = full.stats().scores;
    check(
        after.accepted - before.accepted == after.dropped.queue_full - before.dropped.queue_full,
        "a measured call on the full queue was accepted",
        || after.to_string(),
    );
    drop(full);
    drop(hanging);

    let disabled = Client::disabled();
    g.sampling_mode(SamplingMode::Auto);
    g.bench_function("disabled", |b| {
        b.iter(|| black_box(disabled.score(typed_score())))
    });
    g.bench_function("disabled_str", |b| {
        b.iter(|| black_box(disabled.score(str_score())))
    });
    g.finish();
}

/// Scores until the worker holds all it may and the queue stays full.
fn fill_queue(client: &Client, server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut consecutive = 0u32;
    while consecutive < 100_000 {
        check(Instant::now() < deadline, "the queue never filled", || {
            client.stats().to_string()
        });
        match client.score(typed_score()) {
            Err(ScoreError::QueueFull) => consecutive += 1,
            Ok(()) => consecutive = 0,
            Err(e) => fail("unexpected score error while filling the queue", e),
        }
    }
    check(
        server.wait_for_requests(DEFAULT_MAX_IN_FLIGHT, Duration::from_secs(10)),
        "the worker never sent its requests to the hanging server",
        || format!("{} requests", server.request_count()),
    );
}

// ---------------------------------------------------------------------------------------------
// body/*
// ---------------------------------------------------------------------------------------------

/// What the SDK puts on the wire for `score`, read back from a server that keeps requests.
fn sdk_body(score: Score) -> Bytes {
    let server = TestServer::builder()
        .lenient()
        .start()
        .or_fail("start the test server");
    let client = builder(&server).build().or_fail("build a client");
    client.score(score).or_fail("score accepted");
    client.flush(Duration::from_secs(10)).or_fail("flush");
    let mut requests = server.requests();
    check(
        requests.len() == 1 && requests[0].path == SCORES_PATH,
        "one score request expected",
        || format!("{requests:?}"),
    );
    requests.remove(0).body
}

fn body_benches(c: &mut Criterion) {
    let id = Uuid::parse_str(TRACE_ID).or_fail("TRACE_ID is a UUID");
    let text = Score::new(id, "name", "0.5");
    let numeric = Score::numeric(id, "name", 0.5);
    // `Score::to_body` must be exactly what the SDK sends, or this group measures something else.
    for score in [&text, &numeric] {
        let body = score.to_body().or_fail("a valid score");
        let sent = sdk_body(score.clone());
        check(
            body == sent,
            "Score::to_body differs from the sent body",
            || {
                format!(
                    "{} vs {}",
                    String::from_utf8_lossy(&body),
                    String::from_utf8_lossy(&sent)
                )
            },
        );
    }

    let mut g = c.benchmark_group("body");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    // Validation and serialization, as the worker does per record.
    g.bench_function("serialize", |b| b.iter(|| black_box(&text).to_body()));
    g.bench_function("serialize_numeric", |b| {
        b.iter(|| black_box(&numeric).to_body())
    });
    // The worker's other per-record work: a fresh X-Request-ID.
    g.bench_function("request_id", |b| {
        b.iter(|| {
            HeaderValue::from_str(
                Uuid::new_v4()
                    .hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer()),
            )
            .or_fail("a uuid is a valid header value")
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// delivery/*
// ---------------------------------------------------------------------------------------------

fn delivery_client(server: &TestServer, batch_size: usize, max_in_flight: usize) -> Client {
    builder(server)
        .batch_size(batch_size)
        .max_in_flight(max_in_flight)
        .max_queue_size(DELIVERY_QUEUE)
        .build()
        .or_fail("build a delivery client")
}

/// Scores `n` and flushes; the time from the first `score()` to `flush()` returning. Checks
/// that the server stored every one.
fn sdk_deliver(server: &TestServer, client: &Client, n: u64) -> Duration {
    let before = client.stats().scores;
    let stored_before = server.score_count();
    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let chunk = left.min(DELIVERY_QUEUE as u64);
        left -= chunk;
        for _ in 0..chunk {
            client
                .score(Score::new(TRACE_ID, "bench", "0.42"))
                .or_fail("score accepted");
        }
        client
            .flush(Duration::from_secs(300))
            .or_fail("flush delivers every score");
    }
    let elapsed = start.elapsed();
    let after = client.stats().scores;
    let stored = server.score_count() - stored_before;
    check(
        after.sent - before.sent == n && after.dropped.total() == 0 && stored == n as usize,
        "the SDK did not deliver every score",
        || format!("{n} scored, {stored} stored: {after}"),
    );
    server.reset_records();
    elapsed
}

/// The reference: a bare reqwest client on its own current-thread runtime in its own thread,
/// `in_flight` requests at once, the SDK's body and headers.
struct BareLoop {
    jobs: Option<std_mpsc::Sender<u64>>,
    done: std_mpsc::Receiver<Duration>,
    thread: Option<JoinHandle<()>>,
}

impl BareLoop {
    fn start(server: &TestServer, in_flight: usize, body: Bytes) -> BareLoop {
        let url = reqwest::Url::parse(&format!("{}/evaluations/trace-scores", server.url()))
            .or_fail("scores url");
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(server.api_key()).or_fail("api key header"),
        );
        headers.insert(
            HeaderName::from_static("x-project-name"),
            HeaderValue::from_static(PROJECT),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("pandaprobe-rust/", env!("CARGO_PKG_VERSION"))),
        );
        let (jobs, job_rx) = std_mpsc::channel::<u64>();
        let (done_tx, done) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bare-reqwest".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .or_fail("bare runtime");
                let client = reqwest::Client::builder()
                    .default_headers(headers)
                    .timeout(Duration::from_secs(10))
                    .tcp_nodelay(true)
                    .http1_only()
                    .pool_max_idle_per_host(in_flight)
                    .build()
                    .or_fail("bare reqwest client");
                while let Ok(n) = job_rx.recv() {
                    let elapsed = rt.block_on(bare_run(&client, &url, &body, in_flight, n));
                    if done_tx.send(elapsed).is_err() {
                        break;
                    }
                }
            })
            .or_fail("spawn the bare loop thread");
        BareLoop {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        }
    }

    fn run(&self, server: &TestServer, n: u64) -> Duration {
        let stored_before = server.score_count();
        if let Some(jobs) = &self.jobs {
            jobs.send(n).or_fail("bare loop thread alive");
        }
        let elapsed = self.done.recv().or_fail("bare loop answered");
        let stored = server.score_count() - stored_before;
        check(
            stored == n as usize,
            "the bare loop did not deliver every score",
            || format!("{n} sent, {stored} stored"),
        );
        server.reset_records();
        elapsed
    }
}

impl Drop for BareLoop {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn bare_run(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &Bytes,
    in_flight: usize,
    n: u64,
) -> Duration {
    let remaining = Arc::new(AtomicI64::new(i64::try_from(n).or_fail("n fits i64")));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (client, url, body, remaining) = (
            client.clone(),
            url.clone(),
            body.clone(),
            Arc::clone(&remaining),
        );
        tasks.spawn(async move {
            let mut ok = 0u64;
            while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                let request_id = Uuid::new_v4();
                let response = client
                    .post(url.clone())
                    .header(
                        "x-request-id",
                        HeaderValue::from_str(
                            request_id
                                .hyphenated()
                                .encode_lower(&mut Uuid::encode_buffer()),
                        )
                        .or_fail("request id header"),
                    )
                    .body(body.clone())
                    .send()
                    .await
                    .or_fail("bare POST");
                let status = response.status();
                check(status.as_u16() == 201, "bare POST status", || {
                    status.to_string()
                });
                response.bytes().await.or_fail("read the answer");
                ok += 1;
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += done.or_fail("a bare task");
    }
    let elapsed = start.elapsed();
    check(ok == n, "the bare loop's count", || format!("{ok} of {n}"));
    elapsed
}

fn delivery_group<'a>(c: &'a mut Criterion) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group("delivery");
    g.throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat);
    g
}

fn delivery_benches(c: &mut Criterion) {
    let server = start_server();
    let body = sdk_body(Score::new(TRACE_ID, "bench", "0.42"));
    let mut g = delivery_group(c);
    for batch in [1, 10, 100, 1000] {
        let client = delivery_client(&server, batch, DEFAULT_MAX_IN_FLIGHT);
        let id = BenchmarkId::new(
            format!("sdk_in_flight_{DEFAULT_MAX_IN_FLIGHT}/batch_size"),
            batch,
        );
        g.bench_function(id, |b| b.iter_custom(|n| sdk_deliver(&server, &client, n)));
    }
    for in_flight in [1, 4, 16, 32, 64] {
        let client = delivery_client(&server, DEFAULT_BATCH_SIZE, in_flight);
        let id = BenchmarkId::new(
            format!("sdk_batch_{DEFAULT_BATCH_SIZE}/in_flight"),
            in_flight,
        );
        g.bench_function(id, |b| b.iter_custom(|n| sdk_deliver(&server, &client, n)));
    }
    for in_flight in [1, 4, 16, 32, 64] {
        let bare = BareLoop::start(&server, in_flight, body.clone());
        let id = BenchmarkId::new("bare_reqwest/in_flight", in_flight);
        g.bench_function(id, |b| b.iter_custom(|n| bare.run(&server, n)));
    }
    g.finish();
}

/// Not a criterion bench: the SDK with its defaults (but a queue that holds the whole run)
/// against the bare loop with the same number in flight, alternating, and the ratio.
fn delivery_ratio(quick: bool) {
    const ROUNDS: usize = 7;
    let n: u64 = if quick { 200 } else { 20_000 };
    let server = start_server();
    let body = sdk_body(Score::new(TRACE_ID, "bench", "0.42"));
    let client = builder(&server)
        .max_queue_size(DELIVERY_QUEUE)
        .build()
        .or_fail("build a client");
    let bare = BareLoop::start(&server, DEFAULT_MAX_IN_FLIGHT, body);
    // Warm both: connections opened, allocator and caches settled.
    sdk_deliver(&server, &client, n / 4);
    bare.run(&server, n / 4);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let (mut sdk, mut reference, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so that neither always follows the other's aftermath.
        let (s, r) = if round % 2 == 0 {
            let s = rate(sdk_deliver(&server, &client, n));
            (s, rate(bare.run(&server, n)))
        } else {
            let r = rate(bare.run(&server, n));
            (rate(sdk_deliver(&server, &client, n)), r)
        };
        sdk.push(s);
        reference.push(r);
        ratios.push(s / r);
    }
    let stats = client.stats().scores;
    check(
        stats.is_balanced() && stats.dropped.total() == 0,
        "the ratio's SDK dropped",
        || stats.to_string(),
    );
    println!(
        "delivery/ratio: {ROUNDS} rounds of {n} scores, defaults (batch_size {DEFAULT_BATCH_SIZE}, \
         max_in_flight {DEFAULT_MAX_IN_FLIGHT}) vs bare reqwest with {DEFAULT_MAX_IN_FLIGHT} in flight"
    );
    println!(
        "  sdk  scores/s: {}  median {:.0}",
        list(&sdk, 0),
        median(&mut sdk.clone())
    );
    println!(
        "  bare req/s:    {}  median {:.0}",
        list(&reference, 0),
        median(&mut reference.clone())
    );
    println!(
        "  sdk/bare:      {}  median {:.3}",
        list(&ratios, 3),
        median(&mut ratios.clone())
    );
}

// ---------------------------------------------------------------------------------------------
// flush/*
// ---------------------------------------------------------------------------------------------

const FLUSH_QUEUED: u64 = 1_000;
const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// A client whose timer cannot deliver anything during a run, and whose batch threshold is
/// never reached: only `flush()` can get the worker to send.
fn flush_client(server: &TestServer) -> Client {
    builder(server)
        .flush_interval(FLUSH_INTERVAL)
        .batch_size(100_000)
        .build()
        .or_fail("build the flush client")
}

fn queue_scores(client: &Client, n: u64) {
    for _ in 0..n {
        client
            .score(Score::new(TRACE_ID, "bench", "0.42"))
            .or_fail("score accepted");
    }
}

fn timed_flush(server: &TestServer, client: &Client) -> Duration {
    let stored_before = server.score_count();
    queue_scores(client, FLUSH_QUEUED);
    let start = Instant::now();
    client
        .flush(Duration::from_secs(30))
        .or_fail("flush delivers the 1000");
    let elapsed = start.elapsed();
    let stored = server.score_count() - stored_before;
    check(
        stored == FLUSH_QUEUED as usize,
        "flush returned before every score was stored",
        || format!("{stored} stored"),
    );
    check(
        elapsed < FLUSH_INTERVAL / 4,
        "flush waited for the timer",
        || format!("flush took {elapsed:?}"),
    );
    elapsed
}

fn flush_benches(c: &mut Criterion) {
    let server = start_server();
    let client = flush_client(&server);
    let mut g = c.benchmark_group("flush");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat);
    g.bench_function("1000_queued", |b| {
        b.iter_custom(|iters| {
            let total = (0..iters).map(|_| timed_flush(&server, &client)).sum();
            server.reset_records();
            total
        })
    });
    g.finish();
}

/// Not a criterion bench: how long after the server stored the last of the 1,000 scores does
/// `flush()` return?
fn flush_latency(quick: bool) {
    let rounds = if quick { 2 } else { 20 };
    let server = start_server();
    let client = flush_client(&server);
    timed_flush(&server, &client); // warm the connections
    server.reset_records();
    let (mut flushes, mut lags) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        queue_scores(&client, FLUSH_QUEUED);
        let (stored_tx, stored_rx) = std_mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let all = server.wait_for_scores(FLUSH_QUEUED as usize, Duration::from_secs(30));
                let _ = stored_tx.send((all, Instant::now()));
            });
            let start = Instant::now();
            client
                .flush(Duration::from_secs(30))
                .or_fail("flush delivers the 1000");
            let returned = Instant::now();
            let (all, stored_at) = stored_rx.recv().or_fail("watcher answered");
            check(all, "the server never stored the 1000", || {
                server.score_count().to_string()
            });
            flushes.push(returned.duration_since(start).as_secs_f64() * 1e3);
            // Positive: flush returned after the last store (as it must); small: it did not
            // wait for anything else.
            lags.push(returned.saturating_duration_since(stored_at).as_secs_f64() * 1e3);
        });
        server.reset_records();
    }
    println!(
        "flush/latency: {rounds} rounds, {FLUSH_QUEUED} queued, flush_interval {FLUSH_INTERVAL:?}"
    );
    println!(
        "  flush() ms: median {:.2}, max {:.2}",
        median(&mut flushes.clone()),
        flushes.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "  flush() return after the server stored the last score, ms: median {:.3}, max {:.3} \
         (includes waking the watcher thread)",
        median(&mut lags.clone()),
        lags.iter().copied().fold(0.0, f64::max)
    );
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn list(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

criterion_group!(
    benches,
    score_benches,
    body_benches,
    delivery_benches,
    flush_benches
);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Without `--bench` (e.g. `cargo test --benches`) criterion runs each bench once; with
    // `--quick` it stops as soon as the estimate settles. The printed sections then run quick
    // versions too.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let selected = |name: &str| match filter {
        None => true,
        Some(f) => name.contains(f.as_str()),
    };
    benches();
    if selected("delivery/ratio") {
        delivery_ratio(quick);
    }
    if selected("flush/latency") {
        flush_latency(quick);
    }
    Criterion::default().configure_from_args().final_summary();
}
