//! The PandaProbe Rust SDK's main job, end to end: open a trace with a span, score it from
//! four threads, flush, and print what was delivered and dropped and what one `score()` cost.
//!
//! ```text
//! cargo run --release -p pandaprobe-quickstart
//! ```
//!
//! With no `PANDAPROBE_API_KEY` in the environment it starts an embedded PandaProbe-compatible
//! server on 127.0.0.1 (`pandaprobe-testing`), so no account is needed. That server behaves like
//! the real one (traces are stored a moment after their 202; a score for a trace not stored yet
//! gets a 500) except that its rate limits are off: the real server takes 200 scores a minute,
//! and this sends 100,000. With `PANDAPROBE_API_KEY` and `PANDAPROBE_PROJECT_NAME` (and
//! optionally `PANDAPROBE_ENDPOINT`) set, it talks to that server instead and sends 40 scores.
//!
//! This is its own crate, so that it builds only the SDK, the test server and `serde_json`,
//! not the root crate's dev-dependencies.

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pandaprobe::{Client, ClientBuilder, Score, ScoreDataType, SpanKind};
use pandaprobe_testing::TestServer;
use serde_json::json;

const THREADS: usize = 4;
/// Per thread, against the embedded server.
const EMBEDDED_SCORES_PER_THREAD: usize = 25_000;
/// Per thread, against a real server (well under its 200 scores a minute).
const REAL_SCORES_PER_THREAD: usize = 10;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let embedded = match std::env::var_os("PANDAPROBE_API_KEY") {
        Some(_) => None,
        None => Some(
            TestServer::builder()
                .no_rate_limits()
                .record_requests(false) // it still counts, and stores the scores
                .start()?,
        ),
    };
    let per_thread = match embedded {
        Some(_) => EMBEDDED_SCORES_PER_THREAD,
        None => REAL_SCORES_PER_THREAD,
    };
    let builder = match &embedded {
        Some(server) => {
            println!(
                "no PANDAPROBE_API_KEY set: using an embedded test server at {}",
                server.url()
            );
            println!(
                "  (like the real server it stores traces a moment after answering 202 and \
                 refuses scores for unstored traces; unlike it, no rate limits: the real one \
                 takes 200 scores a minute)"
            );
            Client::builder()
                .api_key(server.api_key())
                .project_name("quickstart")
                .endpoint(server.url())
        }
        None => {
            println!("sending to the server named by the PANDAPROBE_* variables");
            ClientBuilder::from_env()
        }
    };
    let client = builder.max_queue_size(THREADS * per_thread + 16).build()?;
    if !client.is_enabled() {
        println!("PANDAPROBE_ENABLED is off: the client accepts everything and sends nothing");
    }

    // A trace first: the server stores scores only for traces it has stored. Its span ends
    // when dropped; the trace is sent when it ends.
    let trace = client
        .trace("quickstart-agent")
        .tags(["example"])
        .input(json!({"messages": [{"role": "user", "content": "What is PandaProbe?"}]}))
        .start();
    let trace_id = trace.trace_id();
    {
        let llm = trace.span("answer", SpanKind::Llm);
        llm.set_model("example-model");
        llm.set_token_usage(12, 40);
        llm.set_output(json!({"role": "assistant", "content": "Observability for agents."}));
    }
    trace.set_output(
        json!({"messages": [{"role": "assistant", "content": "Observability for agents."}]}),
    );
    trace.end();

    client
        .score(Score::new(trace_id, "user_satisfaction", "0.9").reason("User clicked thumbs up"))?;
    client.score(
        Score::new(trace_id, "hallucination_free", "true").data_type(ScoreDataType::Boolean),
    )?;
    client.score(
        Score::categorical(trace_id, "sentiment", "positive").metadata(json!({"judge": "v2"})),
    )?;

    // The hot path: each thread scores the trace, timing every score() call on its own.
    let started = Instant::now();
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut costs = Vec::with_capacity(per_thread);
                let mut refused = 0u64;
                for i in 0..per_thread {
                    let score = Score::numeric(trace_id, "relevance", (i % 11) as f64 / 10.0)
                        .metadata(json!({"thread": t}));
                    let call = Instant::now();
                    let result = client.score(score);
                    costs.push(call.elapsed());
                    refused += u64::from(result.is_err());
                }
                (costs, refused)
            })
        })
        .collect();
    let mut costs = Vec::with_capacity(THREADS * per_thread);
    let mut refused = 0;
    for producer in producers {
        let (c, r) = producer.join().map_err(|_| "a producer thread panicked")?;
        costs.extend(c);
        refused += r;
    }
    let flushed = client.flush(Duration::from_secs(60));
    let elapsed = started.elapsed();

    let stats = client.stats();
    println!("flush: {flushed:?}");
    println!("scores: {}", stats.scores);
    println!("traces: {}", stats.traces);
    println!("HTTP requests: {}", stats.requests);
    costs.sort_unstable();
    let mean = costs.iter().sum::<Duration>() / costs.len().max(1) as u32;
    let at = |q: f64| costs[((costs.len() as f64 * q) as usize).min(costs.len() - 1)];
    println!(
        "score() cost over {} calls from {THREADS} threads: median {:?}, p99 {:?}, mean {mean:?} \
         ({refused} refused)",
        costs.len(),
        at(0.5),
        at(0.99),
    );
    println!(
        "delivered {} scores in {elapsed:.2?} (first score() of the threads to flush() \
         returning): {:.0} scores/s",
        stats.scores.sent,
        stats.scores.sent as f64 / elapsed.as_secs_f64()
    );
    if let Some(server) = &embedded {
        println!(
            "the server stored {} scores and {} trace(s); it answered 500 {} time(s) \
             (scores sent before their trace was stored, then retried)",
            server.score_count(),
            server.stored_trace_count(),
            server.status_count(500)
        );
    }
    client.shutdown(Duration::from_secs(5))?;
    flushed?;
    Ok(())
}
