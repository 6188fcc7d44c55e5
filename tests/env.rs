//! Configuration from the real process environment (`PANDAPROBE_*`).
//!
//! This binary holds a single test on purpose: it mutates the process environment, which no
//! other test may observe. Run with `cargo test --test env`.

use std::env;
use std::time::Duration;

use pandaprobe::testing::TestServer;
use pandaprobe::{Client, ClientBuilder, ConfigError, Score, ScoreError, Stats};

const TRACE: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
const PROJECT: &str = "env project";
const LONG: Duration = Duration::from_secs(30);

fn clear_pandaprobe_vars() {
    for (name, _) in env::vars_os() {
        if name.to_string_lossy().starts_with("PANDAPROBE_") {
            env::remove_var(&name);
        }
    }
}

fn score_names(client: &Client, prefix: &str, n: usize) -> (usize, usize) {
    let (mut ok, mut full) = (0, 0);
    for i in 0..n {
        match client.score(Score::numeric(TRACE, format!("{prefix}-{i}"), 0.5)) {
            Ok(()) => ok += 1,
            Err(ScoreError::QueueFull) => full += 1,
            Err(e) => panic!("{prefix}-{i}: unexpected {e}"),
        }
    }
    (ok, full)
}

fn assert_counts(stats: &Stats, accepted: u64, sent: u64, queue_full: u64) {
    let s = &stats.scores;
    assert!(s.is_balanced(), "{stats:?}");
    assert!(stats.traces.is_balanced(), "{stats:?}");
    assert_eq!(
        (
            s.accepted,
            s.sent,
            s.pending,
            s.dropped.queue_full,
            s.dropped.total()
        ),
        (accepted, sent, 0, queue_full, queue_full),
        "(accepted, sent, pending, queue_full, dropped) in {stats:?}"
    );
}

/// The environment fails to build a client, with an error that names `names`.
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
    let server = TestServer::start().expect("start the test server");
    clear_pandaprobe_vars();
    env::set_var("PANDAPROBE_API_KEY", server.api_key());
    env::set_var("PANDAPROBE_PROJECT_NAME", PROJECT);
    // A trailing slash on the base URL is stripped.
    env::set_var("PANDAPROBE_ENDPOINT", format!("{}/", server.url()));
    // Parked: more than the queue holds per batch, and an interval that never passes here.
    env::set_var("PANDAPROBE_BATCH_SIZE", "100");
    env::set_var("PANDAPROBE_FLUSH_INTERVAL", "3600");
    env::set_var("PANDAPROBE_MAX_QUEUE_SIZE", "5");

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
    client.flush(LONG).expect("flush");
    assert_eq!(server.score_count(), 5);
    for req in server.requests() {
        assert_eq!(req.path, "/evaluations/trace-scores", "no double slash");
        assert_eq!(req.header("x-api-key"), Some(server.api_key()));
        assert_eq!(req.header("x-project-name"), Some(PROJECT));
        assert_eq!(req.status, Some(201));
    }
    assert_counts(&client.stats(), 6, 5, 1);
    client.shutdown(LONG).expect("clean shutdown");

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
        server.wait_for_scores(6, LONG),
        "batch_size(3) did not wake the worker: {} stored",
        server.score_count()
    );
    client.flush(LONG).expect("flush");
    assert_eq!(server.score_count(), 8);
    assert_counts(&client.stats(), 8, 8, 0);
    client.shutdown(LONG).expect("clean shutdown");

    // 3. A fractional PANDAPROBE_FLUSH_INTERVAL sends without any flush.
    env::set_var("PANDAPROBE_FLUSH_INTERVAL", "0.05");
    server.reset_records();
    let client = Client::from_env().expect("client from the environment");
    client
        .score(Score::numeric(TRACE, "interval", 0.5))
        .expect("accepted");
    assert!(
        server.wait_for_scores(1, LONG),
        "the 50 ms interval delivered it"
    );
    client.flush(LONG).expect("flush");
    assert_counts(&client.stats(), 1, 1, 0);
    client.shutdown(LONG).expect("clean shutdown");

    // 4. Bad values name the variable.
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
    fixed.shutdown(LONG).expect("clean shutdown");
    // Zero parses but is unusable; the error names the setting (`batch_size`).
    env::set_var("PANDAPROBE_BATCH_SIZE", "0");
    let err = Client::from_env().expect_err("a zero batch size is refused");
    assert!(
        err.to_string().to_lowercase().contains("batch_size"),
        "{err}"
    );
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

    env::set_var("PANDAPROBE_MAX_QUEUE_SIZE", "-3");
    env_error("PANDAPROBE_MAX_QUEUE_SIZE");
    env::set_var("PANDAPROBE_MAX_QUEUE_SIZE", "5");

    env::set_var("PANDAPROBE_ENDPOINT", "not a url");
    env_error("endpoint");
    env::set_var("PANDAPROBE_ENDPOINT", server.url());

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

    // 5. PANDAPROBE_ENABLED=false: no key or project needed, nothing sent.
    env::remove_var("PANDAPROBE_API_KEY");
    env::set_var("PANDAPROBE_ENABLED", "false");
    server.reset_records();
    let disabled = Client::from_env().expect("a disabled client needs no key");
    assert!(!disabled.is_enabled());
    assert_eq!(disabled.score(Score::new("not-a-uuid", "", "")), Ok(()));
    disabled.flush(LONG).expect("flush");
    assert_eq!(disabled.stats(), Stats::default());
    assert_eq!(server.request_count(), 0);

    clear_pandaprobe_vars();
}
