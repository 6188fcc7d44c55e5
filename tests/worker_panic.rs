//! The worker cannot take the accounting down with it. A panic inside the worker, here from a
//! user's `tracing` layer that panics in a log call (one of the two ways seen in the field),
//! is caught: what the worker held is counted as `worker_failed` and reaches the drop hook,
//! `flush` and `shutdown` say the worker died, and later `score()` calls say so too instead of
//! queueing into nothing. Its own test binary: it installs a process-wide subscriber.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{client_for, lenient_server, Drops, WAIT};
use pandaprobe::{DropReason, FlushError, Score, ScoreError, Uuid};
use pandaprobe_testing::Fault;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

static ARMED: AtomicBool = AtomicBool::new(false);

/// A layer with a bug: once armed, it panics on the SDK's per-request log line.
struct PanickingLayer;

impl<S: tracing::Subscriber> Layer<S> for PanickingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "pandaprobe"
            && *event.metadata().level() == tracing::Level::INFO
            && ARMED.swap(false, Ordering::SeqCst)
        {
            panic!("a tracing layer with a bug");
        }
    }
}

#[test]
fn a_panic_in_the_worker_is_counted_and_reported_and_nothing_is_queued_into_nothing() {
    let subscriber = tracing_subscriber::registry().with(PanickingLayer);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let server = lenient_server();
    // The first requests are answered late, so the worker holds records when it dies.
    server.fail_next(4, Fault::Delay(Duration::from_secs(1)));
    let drops = Drops::default();
    let client = client_for(&server)
        .debug(true) // every request's outcome at INFO: where the layer panics
        .max_in_flight(4)
        .on_drop(drops.hook())
        .build()
        .expect("client");
    let id = Uuid::new_v4();
    for i in 0..20 {
        client
            .score(Score::numeric(id, format!("s{i}"), 0.5))
            .expect("queued");
    }
    assert!(server.wait_for_requests(4, WAIT));
    // The first answer is logged at INFO, and the worker dies in that call.
    ARMED.store(true, Ordering::SeqCst);
    assert_eq!(client.flush(WAIT), Err(FlushError::WorkerDied));
    assert!(
        common::wait_until(WAIT, || client.stats().scores.pending == 0),
        "{}",
        client.stats()
    );
    assert_eq!(client.shutdown(WAIT), Err(FlushError::WorkerDied));
    let stats = client.stats();
    assert!(stats.scores.is_balanced(), "{stats}");
    assert_eq!(stats.scores.pending, 0, "{stats}");
    assert!(stats.scores.dropped.worker_failed > 0, "{stats}");
    assert_eq!(
        stats.scores.sent + stats.scores.dropped.total(),
        stats.scores.accepted
    );
    assert_eq!(
        client.score(Score::numeric(id, "later", 0.5)),
        Err(ScoreError::WorkerDied)
    );
    assert_eq!(
        client.flush(Duration::from_secs(1)),
        Err(FlushError::WorkerDied)
    );
    let failed = drops
        .events()
        .iter()
        .filter(|e| e.reason() == DropReason::WorkerFailed)
        .count();
    assert!(failed > 0, "what the worker held reached the hook");
}
