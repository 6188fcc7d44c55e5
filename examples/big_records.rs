//! LLM-sized records into a server that never answers: peak memory, and how long `flush` and
//! `shutdown` take with them queued. Linux only (it reads `/proc/self/status`). Each case runs
//! in its own process, since the peak (VmHWM) is the process's:
//!
//! ```text
//! cargo run --release --example big_records -- scores         # 1,000 scores of 2 MB
//! cargo run --release --example big_records -- scores uncut   # the same, max_record_bytes 4 MB
//! cargo run --release --example big_records -- traces         # 20 traces, 500 spans of 100 KiB
//! cargo run --release --example big_records -- load           # flush(100 ms) under 16 threads
//! ```
//!
//! A 2 MB score has a 1 MiB reason and 1 MiB of metadata. With the default limits it is cut to
//! fit `max_record_bytes` (1,000,000 bytes), so "uncut" raises that limit to show the byte
//! budget (`max_queue_bytes`, 128 MiB) bounding the memory on its own. Figures are in
//! docs/measurements.md.

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("big_records reads /proc/self/status, which only Linux has");
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    linux::run()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::error::Error;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use pandaprobe::{Client, ClientBuilder, Score, ScoreDataType, SpanKind, Uuid};
    use pandaprobe_testing::{Fault, TestServer};
    use serde_json::json;

    const MIB: usize = 1024 * 1024;

    fn peak_mib() -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    fn builder(server: &TestServer) -> ClientBuilder {
        Client::builder()
            .api_key(server.api_key())
            .project_name("big-records")
            .endpoint(server.url())
            .request_timeout(Duration::from_secs(60))
    }

    fn deadlines(client: &Client) {
        let mut flushes = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let _ = client.flush(Duration::from_millis(100));
            flushes.push(started.elapsed());
        }
        flushes.sort();
        println!(
            "flush(100 ms) x10: median {:?}, max {:?}",
            flushes[5], flushes[9]
        );
        let started = Instant::now();
        let result = client.shutdown(Duration::from_millis(500));
        let took = started.elapsed();
        let stats = client.stats();
        println!(
            "shutdown(500 ms): {took:?} ({result:?}); pending after it: {}",
            stats.scores.pending + stats.traces.pending
        );
    }

    fn after_shutdown(server: &TestServer, client: &Client) {
        let requests = server.request_count();
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "requests the server saw in the second after shutdown returned: {}",
            server.request_count() - requests
        );
        println!("stats: {}", client.stats());
    }

    pub(crate) fn run() -> Result<(), Box<dyn Error>> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let case = args.first().map(String::as_str).unwrap_or("scores");
        let server = TestServer::builder().lenient().start()?;
        server.set_responder(|_| Some(Fault::Hang));
        let before = peak_mib();
        match case {
            "scores" => {
                let uncut = args.get(1).is_some_and(|a| a == "uncut");
                let mut b = builder(&server);
                if uncut {
                    b = b.max_record_bytes(4 * MIB);
                }
                let client = b.build()?;
                let trace_id = Uuid::new_v4();
                let (mut ok, mut refused) = (0, 0);
                let started = Instant::now();
                for i in 0..1_000 {
                    let score = Score::new(trace_id, format!("judge-{i}"), "ok")
                        .data_type(ScoreDataType::Categorical)
                        .reason("r".repeat(MIB))
                        .metadata(json!({ "context": "m".repeat(MIB) }));
                    match client.score(score) {
                        Ok(()) => ok += 1,
                        Err(_) => refused += 1,
                    }
                }
                println!(
                    "1,000 scores of 2 MB ({}): {ok} accepted, {refused} refused, in {:?}",
                    if uncut {
                        "uncut"
                    } else {
                        "cut to max_record_bytes"
                    },
                    started.elapsed()
                );
                deadlines(&client);
                println!(
                    "peak RSS {:.0} MiB (before the client {before:.0} MiB)",
                    peak_mib()
                );
                after_shutdown(&server, &client);
            }
            "traces" => {
                let client = builder(&server).build()?;
                let started = Instant::now();
                let input = "i".repeat(100 * 1024);
                for t in 0..20 {
                    let trace = client.start_trace(format!("agent-{t}"));
                    for s in 0..500 {
                        let span = trace.span(format!("step-{s}"), SpanKind::Tool);
                        span.set_input(json!(input));
                        span.end();
                    }
                    trace.end();
                }
                println!(
                    "20 traces of 500 spans x 100 KiB: queued in {:?}",
                    started.elapsed()
                );
                let stats = client.stats();
                println!("traces: {}", stats.traces);
                deadlines(&client);
                println!(
                    "peak RSS {:.0} MiB (before the client {before:.0} MiB)",
                    peak_mib()
                );
                after_shutdown(&server, &client);
            }
            _ => {
                let server = TestServer::builder().lenient().start()?;
                let client = builder(&server).build()?;
                let stop = Arc::new(AtomicBool::new(false));
                let scored = Arc::new(AtomicU64::new(0));
                let threads: Vec<_> = (0..16)
                    .map(|t| {
                        let (client, stop, scored) =
                            (client.clone(), Arc::clone(&stop), Arc::clone(&scored));
                        std::thread::spawn(move || {
                            let trace_id = Uuid::new_v4();
                            let mut n = 0u64;
                            while !stop.load(Ordering::Relaxed) && n < 62_500 {
                                let _ = client.score(Score::numeric(trace_id, "load", 0.5));
                                n += 1;
                            }
                            scored.fetch_add(n, Ordering::Relaxed);
                            let _ = t;
                        })
                    })
                    .collect();
                let mut flushes = Vec::new();
                for _ in 0..10 {
                    let started = Instant::now();
                    let _ = client.flush(Duration::from_millis(100));
                    flushes.push(started.elapsed());
                }
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                flushes.sort();
                println!(
                    "flush(100 ms) x10 under 16 scoring threads ({} scores): median {:?}, max {:?}",
                    scored.load(Ordering::Relaxed),
                    flushes[5],
                    flushes[9]
                );
            }
        }
        Ok(())
    }
}
