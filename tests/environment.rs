//! Configuration from the real process environment (`PANDAPROBE_*`): every variable in force,
//! setters winning over it, values that do not parse named in the error, and
//! `PANDAPROBE_ENABLED=false` needing nothing else.
//!
//! This binary holds a single test on purpose: it changes the process environment, which no
//! other test may see.

mod common;

use std::env;

use common::{lenient_server, TRACE_ID, WAIT};
use pandaprobe::{
    Client, ClientBuilder, ConfigError, DropReason, FlushError, Score, ScoreError, Stats,
};
use pandaprobe_testing::{Fault, SCORES_PATH, TRACES_PATH};

const PROJECT: &str = "env project";

fn clear_pandaprobe_vars() {
    for (name, _) in env::vars_os() {
        if name.to_string_lossy().starts_with("PANDAPROBE_") {
            env::remove_var(&name);
        }
    }
}

/// Scores `n` records; returns how many were taken and how many found the queue full.
fn score_names(client: &Client, prefix: &str, n: usize) -> (usize, usize) {
    let (mut ok, mut full) = (0, 0);
    for i in 0..n {
        match client.score(Score::numeric(TRACE_ID, format!("{prefix}-{i}"), 0.5)) {
            Ok(()) => ok += 1,
            Err(ScoreError::QueueFull) => full += 1,
            Err(e) => panic!("{prefix}-{i}: unexpected {e}"),
        }
    }
    (ok, full)
}

#[track_caller]
fn assert_counts(stats: &Stats, accepted: u64, sent: u64, queue_full: u64) {
    common::assert_accounted(stats);
    let s = &stats.scores;
    assert_eq!(
        (s.accepted, s.sent, s.dropped.queue_full, s.dropped.total()),
        (accepted, sent, queue_full, queue_full),
        "(accepted, sent, queue_full, dropped) in {s}"
    );
}

/// The environment fails to build a client, with an error that names `names`, the same from
/// `Client::from_env` and `ClientBuilder::from_env`.
#[track_caller]
fn env_error(names: &str) -> ConfigError {
    let err = Client::from_env().expect_err("a bad environment is refused");
    let message = err.to_string();
    assert!(message.contains(names), "{message:?} does not name {names}");
    let builder_err = ClientBuilder::from_env()
        .build()
        .expect_err("the builder refuses it too");
    assert_eq!(builder_err, err);
    err
}

#[test]
fn client_configuration_from_the_process_environment() {
    let server = lenient_server();
    clear_pandaprobe_vars();
    env::set_var("PANDAPROBE_API_KEY", server.api_key());
    env::set_var("PANDAPROBE_PROJECT_NAME", PROJECT);
    // A trailing slash on the base URL is stripped.
    env::set_var("PANDAPROBE_ENDPOINT", format!("{}/", server.url()));
    // Parked: more than the queue holds per batch, and an interval that never passes here.
    env::set_var("PANDAPROBE_BATCH_SIZE", "100");
    env::set_var("PANDAPROBE_FLUSH_INTERVAL", "3600");
    env::set_var("PANDAPROBE_MAX_QUEUE_SIZE", "5");
    env::set_var("PANDAPROBE_ENVIRONMENT", "staging");
    env::set_var("PANDAPROBE_RELEASE", "9.9.9");

    // 1. Client::from_env: every variable is in force.
    let client = Client::from_env().expect("client from the environment");
    assert!(client.is_enabled());
    assert_eq!(score_names(&client, "env", 5), (5, 0), "room for 5");
    assert_eq!(
        server.request_count(),
        0,
        "parked by BATCH_SIZE and FLUSH_INTERVAL"
    );
    // The sixth finds the queue full (and wakes the worker to drain it).
    assert_eq!(
        score_names(&client, "env-over", 1),
        (0, 1),
        "PANDAPROBE_MAX_QUEUE_SIZE=5"
    );
    client.flush(WAIT).expect("flush");
    assert_eq!(server.score_count(), 5);
    client.start_trace("env-trace").end();
    client.flush(WAIT).expect("flush the trace");
    for req in server.requests() {
        assert!(
            req.path == SCORES_PATH || req.path == TRACES_PATH,
            "no double slash: {}",
            req.path
        );
        assert_eq!(req.header("x-api-key"), Some(server.api_key()));
        assert_eq!(req.header("x-project-name"), Some(PROJECT));
        assert!(matches!(req.status, Some(201 | 202)), "{:?}", req.status);
    }
    let traces = server.traces();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].body["environment"], "staging");
    assert_eq!(traces[0].body["release"], "9.9.9");
    assert_counts(&client.stats(), 6, 5, 1);
    client.shutdown(WAIT).expect("clean shutdown");

    // 2. ClientBuilder::from_env: setters win over the environment.
    let b = ClientBuilder::from_env();
    let shown = format!("{b:?}");
    for part in [
        "batch_size: 100",
        "max_queue_size: 5",
        "flush_interval: 3600s",
    ] {
        assert!(shown.contains(part), "{shown} lacks {part}");
    }
    let b = b.batch_size(3).max_queue_size(20);
    let shown = format!("{b:?}");
    for part in [
        "batch_size: 3",
        "max_queue_size: 20",
        "flush_interval: 3600s",
    ] {
        assert!(shown.contains(part), "{shown} lacks {part}");
    }
    server.reset_records();
    let client = b.build().expect("client from env plus setters");
    assert_eq!(
        score_names(&client, "setter", 8),
        (8, 0),
        "max_queue_size(20) won"
    );
    // batch_size(3) won: the worker is woken by the batch threshold, with no flush and long
    // before the environment's hour-long interval; at most 2 may wait under the threshold.
    assert!(
        server.wait_for_scores(6, WAIT),
        "batch_size(3) did not wake the worker: {} stored",
        server.score_count()
    );
    client.flush(WAIT).expect("flush");
    assert_eq!(server.score_count(), 8);
    assert_counts(&client.stats(), 8, 8, 0);
    client.shutdown(WAIT).expect("clean shutdown");

    // 3. A fractional PANDAPROBE_FLUSH_INTERVAL sends without any flush.
    env::set_var("PANDAPROBE_FLUSH_INTERVAL", "0.05");
    server.reset_records();
    let client = Client::from_env().expect("client from the environment");
    client
        .score(Score::numeric(TRACE_ID, "interval", 0.5))
        .expect("accepted");
    assert!(
        server.wait_for_scores(1, WAIT),
        "the 50 ms interval delivered it"
    );
    client.flush(WAIT).expect("flush");
    assert_counts(&client.stats(), 1, 1, 0);
    client.shutdown(WAIT).expect("clean shutdown");

    // 4. PANDAPROBE_MAX_RETRIES=0: a 503 is final. (Parked again, so that the flush sees the
    // drop: it only sees drops that happen while it waits.)
    env::set_var("PANDAPROBE_FLUSH_INTERVAL", "3600");
    env::set_var("PANDAPROBE_MAX_RETRIES", "0");
    server.reset_records();
    server.fail_next(1, Fault::Status(503));
    let client = Client::from_env().expect("client from the environment");
    client
        .score(Score::numeric(TRACE_ID, "no-retry", 0.5))
        .expect("accepted");
    assert_eq!(
        client.flush(WAIT),
        Err(FlushError::Dropped {
            dropped: 1,
            reason: DropReason::RetriesExhausted
        })
    );
    assert_eq!(server.request_count(), 1, "not retried");
    client.shutdown(WAIT).expect("clean shutdown");
    env::remove_var("PANDAPROBE_MAX_RETRIES");

    // 5. Bad values name the variable.
    env::set_var("PANDAPROBE_BATCH_SIZE", "ten");
    let err = env_error("PANDAPROBE_BATCH_SIZE");
    assert!(
        matches!(&err, ConfigError::Invalid { setting: "PANDAPROBE_BATCH_SIZE", reason } if reason.contains("ten")),
        "{err:?}"
    );
    // A setter replaces the unusable value.
    let fixed = ClientBuilder::from_env()
        .batch_size(5)
        .build()
        .expect("the setter replaces the bad variable");
    fixed.shutdown(WAIT).expect("clean shutdown");
    env::set_var("PANDAPROBE_BATCH_SIZE", "0");
    env_error("PANDAPROBE_BATCH_SIZE");
    env::set_var("PANDAPROBE_BATCH_SIZE", "100");

    env::set_var("PANDAPROBE_FLUSH_INTERVAL", "abc");
    let err = env_error("PANDAPROBE_FLUSH_INTERVAL");
    assert!(
        matches!(&err, ConfigError::Invalid { setting: "PANDAPROBE_FLUSH_INTERVAL", reason } if reason.contains("abc")),
        "{err:?}"
    );
    env::set_var("PANDAPROBE_FLUSH_INTERVAL", "-1");
    env_error("PANDAPROBE_FLUSH_INTERVAL");
    env::set_var("PANDAPROBE_FLUSH_INTERVAL", "0.05");

    for (name, bad) in [
        ("PANDAPROBE_MAX_QUEUE_SIZE", "-3"),
        ("PANDAPROBE_MAX_IN_FLIGHT", "many"),
        ("PANDAPROBE_MAX_RETRIES", "1.5"),
        ("PANDAPROBE_REQUEST_TIMEOUT", "soon"),
        ("PANDAPROBE_CONNECT_TIMEOUT", "-2"),
        ("PANDAPROBE_SHUTDOWN_TIMEOUT", "later"),
    ] {
        env::set_var(name, bad);
        env_error(name);
        env::remove_var(name);
    }
    env::set_var("PANDAPROBE_MAX_QUEUE_SIZE", "5");

    env::set_var("PANDAPROBE_ENDPOINT", "not a url");
    env_error("endpoint");
    env::set_var("PANDAPROBE_ENDPOINT", server.url());

    env::set_var("PANDAPROBE_PROJECT_NAME", "-leading-dash");
    env_error("project_name");
    env::set_var("PANDAPROBE_PROJECT_NAME", PROJECT);

    env::remove_var("PANDAPROBE_API_KEY");
    let err = env_error("PANDAPROBE_API_KEY");
    assert!(
        matches!(
            err,
            ConfigError::Missing {
                setting: "api_key",
                env: "PANDAPROBE_API_KEY"
            }
        ),
        "{err:?}"
    );
    env::set_var("PANDAPROBE_API_KEY", "   ");
    env_error("PANDAPROBE_API_KEY");
    env::set_var("PANDAPROBE_API_KEY", server.api_key());

    env::remove_var("PANDAPROBE_PROJECT_NAME");
    let err = env_error("PANDAPROBE_PROJECT_NAME");
    assert!(
        matches!(
            err,
            ConfigError::Missing {
                setting: "project_name",
                ..
            }
        ),
        "{err:?}"
    );

    // 6. PANDAPROBE_ENABLED=false: no key or project needed, nothing sent.
    env::remove_var("PANDAPROBE_API_KEY");
    env::set_var("PANDAPROBE_ENABLED", "false");
    server.reset_records();
    let disabled = Client::from_env().expect("a disabled client needs no key");
    assert!(!disabled.is_enabled());
    assert_eq!(disabled.score(Score::new("not-a-uuid", "", "")), Ok(()));
    disabled.flush(WAIT).expect("flush");
    assert_eq!(disabled.stats(), Stats::default());
    assert_eq!(server.request_count(), 0);
    // Any of the Python SDK's true values enables it again (and then the key is required).
    env::set_var("PANDAPROBE_ENABLED", "Yes");
    env_error("PANDAPROBE_API_KEY");

    clear_pandaprobe_vars();
}
