//! Flush and shutdown from wherever a caller is: a plain thread with no runtime, inside a
//! current-thread or a multi-thread tokio runtime (blocking calls, the async variants, tasks,
//! `spawn_blocking`), and dropping the last handle there. Against a server that never answers,
//! every flush and shutdown keeps its deadline, and what it gave up on is counted.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    abandoned, assert_accounted, assert_all_sent, client_for, hanging_server, lenient_server,
    parked, score_batch, score_from_threads, TRACE_ID, WAIT,
};
use pandaprobe::{Client, FlushError, Score, ScoreError};

/// Everything accepted was sent, and nothing else happened.
#[track_caller]
fn assert_delivered(client: &Client, n: u64) {
    let stats = client.stats();
    assert_accounted(&stats);
    assert_all_sent(&stats.scores, n);
}

// ---------------------------------------------------------------------------------------------
// A healthy server
// ---------------------------------------------------------------------------------------------

#[test]
fn flush_and_shutdown_without_a_runtime() {
    let server = lenient_server();
    let client = parked(client_for(&server)).build().expect("client");
    score_batch(&client, "plain", 100);
    client.flush(WAIT).expect("flush");
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
    assert_delivered(&client, 150);
}

#[tokio::test(flavor = "current_thread")]
async fn flush_and_shutdown_inside_a_current_thread_runtime() {
    let server = lenient_server();
    let client = parked(client_for(&server)).build().expect("client");
    score_batch(&client, "ct-blocking", 100);
    // A blocking flush straight from the async fn, on the runtime's only thread.
    client.flush(WAIT).expect("blocking flush");
    assert_eq!(server.score_count(), 100);

    score_batch(&client, "ct-async", 100);
    client.flush_async(WAIT).await.expect("async flush");
    assert_eq!(server.score_count(), 200);

    // A task on this runtime scores and flushes too.
    let task_client = client.clone();
    tokio::spawn(async move {
        score_batch(&task_client, "ct-task", 50);
        task_client.flush_async(WAIT).await
    })
    .await
    .expect("the task ran")
    .expect("flush in a task");
    assert_eq!(server.score_count(), 250);

    score_batch(&client, "ct-shutdown", 50);
    client.shutdown(WAIT).expect("blocking shutdown");
    assert_eq!(server.score_count(), 300);
    assert_delivered(&client, 300);
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_async_inside_a_current_thread_runtime() {
    let server = lenient_server();
    let client = parked(client_for(&server)).build().expect("client");
    score_batch(&client, "ct-shutdown-async", 100);
    client.shutdown_async(WAIT).await.expect("async shutdown");
    assert_eq!(server.score_count(), 100);
    assert_eq!(client.shutdown_async(WAIT).await, Ok(()), "idempotent");
    assert_eq!(client.shutdown(WAIT), Ok(()), "the blocking one agrees");
    assert_eq!(client.flush_async(WAIT).await, Err(FlushError::ShutDown));
    assert_delivered(&client, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_shutdown_inside_a_multi_thread_runtime() {
    let server = Arc::new(lenient_server());
    let client = parked(client_for(&server)).build().expect("client");
    score_batch(&client, "mt-blocking", 100);
    client
        .flush(WAIT)
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
                    .flush_async(WAIT)
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
        task.await.expect("the task finished without panicking");
    }
    let blocking_client = client.clone();
    tokio::task::spawn_blocking(move || {
        score_batch(&blocking_client, "mt-spawn-blocking", 100);
        blocking_client.flush(WAIT)
    })
    .await
    .expect("the blocking task ran")
    .expect("flush from spawn_blocking");
    assert_eq!(server.score_count(), 600);

    score_batch(&client, "mt-shutdown", 100);
    client
        .shutdown(WAIT)
        .expect("blocking shutdown on a runtime thread");
    assert_eq!(server.score_count(), 700);
    assert_delivered(&client, 700);
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_last_handle_inside_a_current_thread_runtime_delivers() {
    let server = lenient_server();
    let client = parked(client_for(&server)).build().expect("client");
    let clone = client.clone();
    tokio::spawn(async move {
        score_batch(&clone, "ct-drop-task", 50);
        // `clone` is dropped at the end of the task.
    })
    .await
    .expect("the task ran");
    score_batch(&client, "ct-drop", 50);
    assert_eq!(client.stats().scores.pending, 100);
    drop(client);
    assert_eq!(server.score_count(), 100, "the drop delivered everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_inside_a_multi_thread_runtime_delivers() {
    let server = lenient_server();
    let client = parked(client_for(&server)).build().expect("client");
    score_batch(&client, "mt-drop", 100);
    // Dropped on a runtime worker thread, in a task.
    tokio::spawn(async move { drop(client) })
        .await
        .expect("the task ran");
    assert_eq!(server.score_count(), 100, "the drop delivered everything");
}

// ---------------------------------------------------------------------------------------------
// A server that never answers: every call keeps its deadline
// ---------------------------------------------------------------------------------------------

const SECOND: Duration = Duration::from_secs(1);

/// `elapsed` is at least `timeout` and less than a second beyond it.
#[track_caller]
fn kept(what: &str, elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed >= timeout && elapsed < timeout + SECOND,
        "{what}({timeout:?}) took {elapsed:?}"
    );
}

/// With the server hanging, `flush(1s)` fails after a second, reporting what is pending (which
/// stays queued), and `shutdown(2s)` returns after two, reporting what it abandoned, which
/// the stats count as dropped at shutdown. Later shutdowns give the first outcome at once.
#[test]
fn flush_and_shutdown_under_a_hanging_server_keep_their_deadlines() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    const R: u64 = (THREADS * PER_THREAD) as u64;
    let server = hanging_server();
    let client = client_for(&server)
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    assert_eq!(
        score_from_threads(&client, THREADS, PER_THREAD),
        (R, vec![])
    );

    let started = Instant::now();
    let flushed = client.flush(SECOND);
    kept("flush", started.elapsed(), SECOND);
    assert_eq!(common::timed_out(&flushed), Some((R, SECOND)));
    let message = flushed.expect_err("timed out").to_string();
    assert!(
        message.contains("200") && message.contains("pending"),
        "{message}"
    );
    assert!(server.wait_for_requests(1, WAIT), "nothing was sent");
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        (s.accepted, s.pending, s.sent),
        (R, R, 0),
        "still queued: {s}"
    );

    let timeout = 2 * SECOND;
    let started = Instant::now();
    let shut = client.shutdown(timeout);
    kept("shutdown", started.elapsed(), timeout);
    assert_eq!(common::timed_out(&shut), Some((R, timeout)));
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!((s.pending, s.sent, abandoned(&s)), (0, 0, R), "{s}");

    // After shutdown: refused and counted; later calls give the first outcome, at once.
    assert_eq!(
        client.score(Score::numeric(TRACE_ID, "late", 0.5)),
        Err(ScoreError::ShutDown)
    );
    let started = Instant::now();
    assert_eq!(client.shutdown(Duration::from_secs(5)), shut);
    assert!(started.elapsed() < SECOND, "a repeated shutdown waited");
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!(abandoned(&s), R + 1, "{s}");
    assert_eq!(server.score_count(), 0);
}

/// Inside a current-thread runtime: `flush_async` gives up at its deadline, and dropping the
/// last handle gives up after `shutdown_timeout`.
#[tokio::test(flavor = "current_thread")]
async fn timeouts_inside_a_current_thread_runtime_with_a_hanging_server() {
    let server = hanging_server();
    let client = client_for(&server)
        .request_timeout(Duration::from_secs(60))
        .shutdown_timeout(SECOND)
        .build()
        .expect("client");
    score_batch(&client, "ct-hang", 3);
    let started = Instant::now();
    let result = client.flush_async(SECOND).await;
    kept("flush_async", started.elapsed(), SECOND);
    assert_eq!(common::timed_out(&result), Some((3, SECOND)));
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!((s.accepted, s.pending), (3, 3), "{s}");

    let started = Instant::now();
    drop(client);
    kept("drop with shutdown_timeout", started.elapsed(), SECOND);
    assert_eq!(server.score_count(), 0);
}

/// Inside a multi-thread runtime: `shutdown_async` keeps its deadline too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_async_inside_a_multi_thread_runtime_with_a_hanging_server() {
    let server = hanging_server();
    let client = client_for(&server)
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    score_batch(&client, "mt-hang", 5);
    let started = Instant::now();
    let result = client.shutdown_async(SECOND).await;
    kept("shutdown_async", started.elapsed(), SECOND);
    assert_eq!(common::timed_out(&result), Some((5, SECOND)));
    assert_eq!(
        client.shutdown_async(SECOND).await,
        result,
        "the first outcome again"
    );
    let s = client.stats().scores;
    assert!(s.is_balanced(), "{s}");
    assert_eq!((s.pending, abandoned(&s)), (0, 5), "{s}");
}

// ---------------------------------------------------------------------------------------------
// Who owns the worker
// ---------------------------------------------------------------------------------------------

/// Only client handles own the worker: a trace and its span that outlive the last client do
/// not block the runtime that drops them (with a hanging server, a shutdown there would take
/// the whole timeout), and what they carried reaches an outcome: refused as shut down,
/// counted and handed to the hook.
#[test]
fn the_last_trace_and_span_ended_after_the_client_never_block_and_are_counted() {
    let server = hanging_server();
    let drops = common::Drops::default();
    let client = client_for(&server)
        .shutdown_timeout(Duration::from_secs(1))
        .on_drop(drops.hook())
        .build()
        .expect("client");
    let trace = client.start_trace("outlives-its-client");
    let span = trace.span("step", pandaprobe::SpanKind::Tool);
    trace
        .score(Score::numeric(trace.trace_id(), "held", 0.5))
        .expect("held");
    let stats_before_drop = client.stats();
    drop(client); // the client owns the worker: its drop is the one that may wait
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let took = runtime.block_on(async move {
        let started = Instant::now();
        span.end();
        drop(trace);
        started.elapsed()
    });
    eprintln!("ending the last span and trace took {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(stats_before_drop.traces.accepted, 0, "still open then");
    let events = drops.events();
    assert_eq!(events.len(), 2, "the trace and its score: {events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.reason() == pandaprobe::DropReason::Shutdown),
        "{events:?}"
    );
}
