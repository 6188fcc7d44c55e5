//! Scores traces from several threads and reports what was delivered and what one `score()`
//! call cost.
//!
//! With no `PANDAPROBE_API_KEY` in the environment it starts the in-process test server (the
//! embedded default, no account needed) and sends there; with the `PANDAPROBE_*` variables set
//! it talks to the real server.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::{Duration, Instant};

use pandaprobe::testing::TestServer;
use pandaprobe::{Client, ClientBuilder, Score, ScoreDataType, SpanKind};
use serde_json::json;

const THREADS: usize = 4;
const SCORES_PER_THREAD: usize = 25_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pandaprobe=info".into()),
        )
        .init();

    // The embedded default: a PandaProbe-compatible server on 127.0.0.1, in this process.
    let embedded = match std::env::var_os("PANDAPROBE_API_KEY") {
        Some(_) => None,
        None => Some(TestServer::builder().require_known_traces(true).start()?),
    };
    let builder = match &embedded {
        Some(server) => {
            println!(
                "no PANDAPROBE_API_KEY set: sending to the embedded test server at {}",
                server.url()
            );
            Client::builder()
                .api_key(server.api_key())
                .project_name("quickstart")
                .endpoint(server.url())
                .max_queue_size(THREADS * SCORES_PER_THREAD)
        }
        None => {
            println!("sending to the server named by the PANDAPROBE_* variables");
            ClientBuilder::from_env()
        }
    };
    let client = builder.build()?;

    // A trace first: the server stores scores only for traces it has stored.
    let trace = client
        .trace("quickstart-agent")
        .tags(["example"])
        .input(json!({
            "messages": [{"role": "user", "content": "What is PandaProbe?"}]
        }))
        .start();
    let trace_id = trace.trace_id();
    {
        let llm = trace.span("answer", SpanKind::Llm);
        llm.set_model("example-model");
        llm.set_token_usage(12, 40);
        trace.set_output(
            json!({"messages": [{"role": "assistant", "content": "Observability for agents."}]}),
        );
    }
    trace.end();
    client
        .score(Score::new(trace_id, "user_satisfaction", "0.9").reason("User clicked thumbs up"))?;
    client.score(
        Score::new(trace_id, "hallucination_free", "true").data_type(ScoreDataType::Boolean),
    )?;
    client.score(
        Score::categorical(trace_id, "sentiment", "positive").metadata(json!({"judge": "v2"})),
    )?;

    // A real server limits scores to about 200 a minute: send a burst only to the embedded one.
    let per_thread = if embedded.is_some() {
        SCORES_PER_THREAD
    } else {
        10
    };
    let started = Instant::now();
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut spent = Duration::ZERO;
                let mut refused = 0u64;
                for i in 0..per_thread {
                    let score = Score::numeric(trace_id, "relevance", (i % 11) as f64 / 10.0)
                        .metadata(json!({"thread": t}));
                    let call = Instant::now();
                    let result = client.score(score);
                    spent += call.elapsed();
                    refused += u64::from(result.is_err());
                }
                (spent, refused)
            })
        })
        .collect();
    let mut spent = Duration::ZERO;
    for producer in producers {
        let (s, _) = producer.join().map_err(|_| "a producer thread panicked")?;
        spent += s;
    }
    let flushed = client.flush(Duration::from_secs(60));
    let elapsed = started.elapsed();
    let calls = (THREADS * per_thread) as u32;

    let stats = client.stats();
    println!("flush: {flushed:?}");
    println!("scores: {}", stats.scores);
    println!("traces: {}", stats.traces);
    println!(
        "score() cost: {:?} per call on average over {calls} calls from {THREADS} threads",
        spent / calls
    );
    println!(
        "delivered {} scores in {:.2?}: {:.0} scores/s",
        stats.scores.sent,
        elapsed,
        stats.scores.sent as f64 / elapsed.as_secs_f64()
    );
    if let Some(server) = &embedded {
        println!(
            "the server stored {} scores and {} trace(s); answered 500 {} time(s)",
            server.score_count(),
            server.trace_count(),
            server.status_count(500)
        );
    }
    client.shutdown(Duration::from_secs(5))?;
    Ok(())
}
