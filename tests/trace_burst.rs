//! A burst of traces with scores is never dropped: 10,000 requests, each ending a trace with one
//! span and scoring it three times, against a server that stores every trace 20 ms after
//! accepting it (the pipeline is under test here, not the server's storage). Its own test
//! binary, so that nothing else runs beside it: it needs the machine's two cores.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{assert_all_sent, client_for, trace_then_three_scores};
use pandaprobe::Client;
use pandaprobe_testing::TestServer;

/// 10,000 requests, each ending a trace with one span and scoring it three times.
fn burst(server: &TestServer, client: &Client, per_second: Option<f64>) {
    let start = Instant::now();
    for i in 0..10_000u32 {
        if let Some(rate) = per_second {
            // Pacing the producer like a live service, not synchronising with the worker.
            let due = start + Duration::from_secs_f64(f64::from(i) / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        trace_then_three_scores(client, 1);
    }
    let produced = start.elapsed();
    let flushed = client.flush(Duration::from_secs(60));
    let stats = client.stats();
    eprintln!(
        "burst ({per_second:?}/s): produced in {produced:?}, flush {flushed:?} {:?} later; \
         {stats}; 500s answered: {}",
        start.elapsed() - produced,
        server.status_count(500)
    );
    flushed.expect("every record delivered");
    assert_all_sent(&stats.traces, 10_000);
    assert_all_sent(&stats.scores, 30_000);
    assert_eq!(server.score_count(), 30_000);
}

/// A server that stores every trace 20 ms after accepting it, however many arrive: the
/// pipeline, not the server, is under test.
fn fast_storing_server() -> TestServer {
    TestServer::builder()
        .no_rate_limits()
        .trace_store_time(Duration::from_millis(20), Duration::ZERO)
        .trace_store_workers(128)
        .record_requests(false)
        .start()
        .expect("test server")
}

#[test]
fn a_burst_of_traces_with_scores_drops_nothing() {
    // Paced like a live service, at default settings.
    let server = fast_storing_server();
    let client = client_for(&server).build().expect("client");
    burst(&server, &client, Some(3600.0));
    // At full speed, with a queue large enough to hold the burst.
    let server = fast_storing_server();
    let client = client_for(&server)
        .max_queue_size(40_000)
        .build()
        .expect("client");
    burst(&server, &client, None);
}
