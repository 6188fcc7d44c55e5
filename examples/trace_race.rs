//! Scores right after their traces, and traces longer than one request: how long after the
//! server stores a trace its scores arrive, and what the readiness probes cost.
//!
//! ```text
//! cargo run --release --example trace_race                 # against the embedded test server
//! cargo run --release --example trace_race -- --real       # PANDAPROBE_* name the server
//! cargo run --release --example trace_race -- --scenario long
//! ```
//!
//! Scenarios: `race` (12 traces of 0-500 spans, 3 scores each, ended back to back), `small`
//! (one trace of one span and 3 scores, five times, a flush after each), `long` (one trace of
//! 1,800 spans and 3 scores), `all` (the three). It prints each trace id with the Unix time
//! in milliseconds at which its flush began and returned, so that the times the server
//! stored them can be read from its database; against the embedded server it reads them
//! itself, with the probes' requests and bytes.

use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pandaprobe::{Client, ClientBuilder, Score, SpanKind, Uuid};
use pandaprobe_testing::{TestServer, SCORES_PATH, TRACES_PATH};

const SIZES: [usize; 12] = [0, 500, 0, 250, 0, 100, 0, 400, 0, 50, 0, 300];

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// A trace of `spans` spans (children of a root past the first), ended, then three scores.
fn trace_then_three_scores(client: &Client, name: &str, spans: usize) -> Uuid {
    let trace = client.start_trace(name);
    let id = trace.trace_id();
    if spans > 0 {
        let root = trace.span("root", SpanKind::Agent);
        for i in 1..spans {
            root.span(format!("step {i}"), SpanKind::Tool).end();
        }
        root.end();
    }
    trace.end();
    for score in ["relevance", "helpfulness", "safety"] {
        let _ = client.score(Score::numeric(id, score, 0.5));
    }
    id
}

fn run(
    client: &Client,
    server: Option<&TestServer>,
    label: &str,
    sizes: &[usize],
) -> Result<(), Box<dyn Error>> {
    let before = client.stats();
    let began = (Instant::now(), unix_ms());
    let ids: Vec<Uuid> = sizes
        .iter()
        .map(|&n| trace_then_three_scores(client, label, n))
        .collect();
    let flushed = client.flush(Duration::from_secs(300));
    let took = began.0.elapsed();
    let stats = client.stats();
    println!(
        "{label}: {} trace(s), flush {flushed:?} after {took:?} (began {} returned {} unix ms); \
         {} score/trace/span requests, {} readiness probes",
        ids.len(),
        began.1,
        unix_ms(),
        stats.requests - before.requests,
        stats.probes - before.probes,
    );
    for (id, n) in ids.iter().zip(sizes) {
        println!("  trace {id} spans {n}");
    }
    if let Some(server) = server {
        let stored = ids
            .iter()
            .filter_map(|id| server.trace_stored_at(*id))
            .max();
        let last_score = server.scores().iter().filter_map(|s| s.stored_at).max();
        if let (Some(stored), Some(last_score)) = (stored, last_score) {
            println!(
                "  last trace stored {:?} after the start; last score {:?} after that; \
                 flush returned {:?} after it",
                stored.saturating_duration_since(began.0),
                last_score.saturating_duration_since(stored),
                Instant::now().saturating_duration_since(stored),
            );
        }
        let probes: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| {
                r.path != SCORES_PATH
                    && r.path != TRACES_PATH
                    && (r.method == "GET" || r.body.len() < 4096)
            })
            .collect();
        let sent: usize = probes.iter().map(|r| r.body.len()).sum();
        println!(
            "  probes seen by the server: {} ({:.1} a trace), {sent} body bytes sent; answers \
             {:?}",
            probes.len(),
            probes.len() as f64 / ids.len() as f64,
            probes.iter().map(|r| r.status.unwrap_or(0)).fold(
                std::collections::BTreeMap::new(),
                |mut m, s| {
                    *m.entry(s).or_insert(0) += 1;
                    m
                }
            )
        );
        server.reset_records();
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut real = false;
    let mut scenario = "all".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--real" => real = true,
            "--scenario" => scenario = args.next().ok_or("--scenario needs a value")?,
            _ => return Err(format!("unknown option {flag}; --real, --scenario S").into()),
        }
    }
    let server = match real {
        true => None,
        false => Some(TestServer::builder().start()?),
    };
    let client = match &server {
        Some(server) => Client::builder()
            .api_key(server.api_key())
            .project_name("trace-race")
            .endpoint(server.url())
            .build()?,
        None => ClientBuilder::from_env().build()?,
    };
    let server = server.as_ref();
    if matches!(scenario.as_str(), "race" | "all") {
        run(&client, server, "race", &SIZES)?;
    }
    if matches!(scenario.as_str(), "small" | "all") {
        for _ in 0..5 {
            run(&client, server, "small", &[1])?;
        }
    }
    if matches!(scenario.as_str(), "long" | "all") {
        run(&client, server, "long", &[1800])?;
    }
    client.shutdown(Duration::from_secs(10))?;
    println!("{}", client.stats());
    Ok(())
}
