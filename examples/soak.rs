//! A soak run: random faults for minutes, with chosen rates, and a check that every record is
//! accounted for.
//!
//! An in-process test server answers each score request at random (201, 500, 503, 429, a short
//! delay, a delay past the request timeout, a reset, a store-then-reset) while producer threads
//! score at a steady rate and flush now and then. Every few seconds it prints the counters; at
//! the end it checks that every record is accounted for and prints a verdict (exit status 0 for
//! PASS, 1 for FAIL, 2 for a usage error).
//!
//! ```text
//! cargo run --release --example soak -- --help
//! cargo run --release --example soak -- duration=300 rate=2000 p500=0.1
//! cargo run --release --example soak -- duration=5 rate=500      # a quick check
//! ```
//!
//! Every setting is `name=value` on the command line (a leading `--` is allowed) or the
//! environment variable `SOAK_<NAME>`; the command line wins. With `keep=1` (the default) the
//! server and the producers keep every score for the final per-record check, about 2.5 KB
//! each; `keep=0` forgets them at every progress line, so that the process's memory (printed
//! as `rss`, Linux only) shows the SDK's own footprint over a long run.
//!
//! The server is `lenient()` (no rate limits of its own, scores accepted for any trace), so
//! that every failure is one of the injected faults, at the shares given. The random 429s name
//! no limit: a 429 that names one (as the real server's do) makes the client keep to it for
//! the rest of the run, which `tests/` covers with a real window.
//!
//! Measured (2 vCPU AMD EPYC KVM guest, 2026-11-29, other builds running),
//! `-- duration=10 rate=1000`, defaults otherwise: PASS; accepted 10,004, sent 9,997, dropped
//! 7 (retries exhausted, with `retries=3`); 1,938 retries, 723 of them ambiguous; the server
//! stored 417 duplicate rows, all within the ambiguous count; 1.195 requests per delivered
//! record.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pandaprobe::{Client, FlushError, Score, ScoreError};
use pandaprobe_testing::{Fault, TestServer, SCORES_PATH};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";

/// The fault shares, in the order of [`Chaos::NAMES`].
const SHARES: [&str; 7] = [
    "p500", "p503", "p429", "pdelay", "plong", "preset", "pstore",
];

/// `(name, default, help)`.
const SETTINGS: [(&str, f64, &str); 17] = [
    ("duration", 60.0, "seconds of scoring"),
    ("threads", 4.0, "producer threads"),
    ("rate", 1000.0, "scores per second, all threads together"),
    ("every", 5.0, "seconds between progress lines"),
    ("seed", 42.0, "seed of the random answers and flushes"),
    (
        "p500",
        0.05,
        "share of requests answered 500 (and the connection closed)",
    ),
    ("p503", 0.05, "share answered 503"),
    (
        "p429",
        0.01,
        "share answered 429 without Retry-After and without a limit in its body",
    ),
    (
        "pdelay",
        0.03,
        "share answered after a delay shorter than the timeout",
    ),
    (
        "plong",
        0.01,
        "share answered after a delay past the timeout (stored anyway)",
    ),
    ("preset", 0.025, "share reset without an answer"),
    (
        "pstore",
        0.025,
        "share stored, then reset without an answer",
    ),
    (
        "pflush",
        0.001,
        "chance that a producer calls flush() after a score",
    ),
    ("timeout_ms", 200.0, "the client's request timeout"),
    ("retries", 3.0, "the client's max_retries"),
    ("queue", 10000.0, "the client's max_queue_size"),
    (
        "keep",
        1.0,
        "1: keep every stored score for the final per-record check; 0: forget them at each \
         progress line (flat memory for long runs; the final check is then the counters only)",
    ),
];

fn main() {
    std::process::exit(run());
}

struct Settings(HashMap<&'static str, f64>);

impl Settings {
    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// `Err("")` asks for the usage text alone.
    fn parse() -> Result<Settings, String> {
        let mut values: HashMap<&'static str, f64> =
            SETTINGS.iter().map(|(n, d, _)| (*n, *d)).collect();
        for (name, _, _) in SETTINGS {
            if let Ok(v) = std::env::var(format!("SOAK_{}", name.to_uppercase())) {
                let v = v.trim().parse().map_err(|_| format!("SOAK_{name}={v:?}"))?;
                values.insert(name, v);
            }
        }
        for arg in std::env::args().skip(1) {
            let arg = arg.trim_start_matches("--");
            if arg.is_empty() {
                continue;
            }
            if arg == "help" || arg == "h" || arg == "-h" {
                return Err(String::new());
            }
            let (name, value) = arg
                .split_once('=')
                .ok_or_else(|| format!("{arg:?}: expected name=value"))?;
            let (known, _, _) = SETTINGS
                .iter()
                .find(|(n, _, _)| *n == name)
                .ok_or_else(|| format!("unknown setting {name:?}"))?;
            let value = value
                .trim()
                .parse()
                .map_err(|_| format!("{name}={value:?} is not a number"))?;
            values.insert(known, value);
        }
        let total: f64 = SHARES.iter().map(|p| values[p]).sum();
        if !(0.0..=1.0).contains(&total) {
            return Err(format!("the fault shares add up to {total}, above 1"));
        }
        Ok(Settings(values))
    }
}

fn usage() {
    eprintln!("usage: cargo run --release --example soak -- [name=value]...\n");
    for (name, default, help) in SETTINGS {
        eprintln!(
            "  {name:<11} {default:<8} {help} (env SOAK_{})",
            name.to_uppercase()
        );
    }
}

/// The process's resident memory, where the platform tells.
#[cfg(target_os = "linux")]
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// The process's resident memory, where the platform tells.
#[cfg(not(target_os = "linux"))]
fn rss() -> String {
    "n/a (Linux only)".to_owned()
}

/// The random answers, and how many of each went out.
struct Chaos {
    rng: Mutex<StdRng>,
    /// Shares in the order of [`Chaos::NAMES`] (without the 201).
    shares: [f64; 7],
    timeout: Duration,
    counts: [AtomicU64; 8],
}

impl Chaos {
    const NAMES: [&'static str; 8] = [
        "500",
        "503",
        "429",
        "short delay",
        "long delay",
        "reset",
        "store+reset",
        "201",
    ];

    fn answer(&self) -> Option<Fault> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut roll: f64 = rng.gen();
        let mut which = 7;
        for (i, share) in self.shares.iter().enumerate() {
            if roll < *share {
                which = i;
                break;
            }
            roll -= share;
        }
        self.counts[which].fetch_add(1, Ordering::Relaxed);
        let t = self.timeout.as_millis().max(4) as u64;
        match which {
            0 => Some(Fault::Status(500)),
            1 => Some(Fault::Status(503)),
            // Not `Fault::Status(429)`: its body names the real server's limit (200 a
            // minute), which the client would then keep to for the rest of the run.
            2 => Some(Fault::Raw {
                status: 429,
                headers: vec![("content-type".into(), "application/json".into())],
                body: r#"{"error":"Too Many Requests"}"#.into(),
            }),
            3 => Some(Fault::Delay(Duration::from_millis(rng.gen_range(1..t / 2)))),
            4 => Some(Fault::Delay(Duration::from_millis(
                rng.gen_range(t * 3 / 2..t * 2),
            ))),
            5 => Some(Fault::Reset),
            6 => Some(Fault::StoreThenReset),
            _ => None,
        }
    }

    fn summary(&self) -> String {
        Chaos::NAMES
            .iter()
            .zip(&self.counts)
            .map(|(n, c)| format!("{n} {}", c.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Requests that never get a status: the resets.
    fn unanswered(&self) -> u64 {
        self.counts[5].load(Ordering::Relaxed) + self.counts[6].load(Ordering::Relaxed)
    }
}

fn progress(start: Instant, client: &Client, server: &TestServer) {
    let stats = client.stats();
    println!(
        "{:>7.1}s {}; requests {} stored {} rss {}",
        start.elapsed().as_secs_f64(),
        stats.scores,
        stats.requests,
        server.score_count(),
        rss(),
    );
}

/// What the producers saw.
#[derive(Default)]
struct Produced {
    /// `(thread, n)` of every accepted score (with `keep=1`).
    accepted: HashSet<(u64, u64)>,
    queue_full: u64,
    /// Any other refusal: none is expected.
    other_errors: u64,
    flushes: u64,
}

/// A flush or shutdown that saw every record reach its outcome (some may have been dropped,
/// which the counters check).
fn completed(result: &Result<(), FlushError>) -> bool {
    matches!(result, Ok(()) | Err(FlushError::Dropped { .. }))
}

fn run() -> i32 {
    let settings = match Settings::parse() {
        Ok(s) => s,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("soak: {e}\n");
            }
            usage();
            return 2;
        }
    };
    let duration = Duration::from_secs_f64(settings.get("duration").max(0.0));
    let threads = (settings.get("threads") as usize).max(1);
    let rate = settings.get("rate").max(1.0);
    let every = Duration::from_secs_f64(settings.get("every").max(0.1));
    let seed = settings.get("seed") as u64;
    let timeout = Duration::from_millis(settings.get("timeout_ms").max(4.0) as u64);
    let pflush = settings.get("pflush").clamp(0.0, 1.0);
    let keep = settings.get("keep") != 0.0;
    let mut shown: Vec<_> = settings.0.iter().collect();
    shown.sort_by(|a, b| a.0.cmp(b.0));
    println!("soak: {duration:?} at {rate} scores/s from {threads} threads, seed {seed}, settings {shown:?}");

    let server = match TestServer::builder()
        .lenient()
        .record_requests(false)
        .start()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: cannot start the test server: {e}");
            return 2;
        }
    };
    let chaos = Arc::new(Chaos {
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
        shares: SHARES.map(|p| settings.get(p)),
        timeout,
        counts: Default::default(),
    });
    {
        let chaos = Arc::clone(&chaos);
        server.set_responder(move |request| {
            (request.path == SCORES_PATH)
                .then(|| chaos.answer())
                .flatten()
        });
    }
    let client = match Client::builder()
        .api_key(server.api_key())
        .project_name("soak")
        .endpoint(server.url())
        .flush_interval(Duration::from_millis(50))
        .max_queue_size((settings.get("queue") as usize).max(1))
        .request_timeout(timeout)
        .max_retries(settings.get("retries") as u32)
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(200))
        .max_retry_after(Duration::from_millis(500))
        .retry_max_elapsed(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("soak: cannot build the client: {e}");
            return 2;
        }
    };

    let start = Instant::now();
    let done = AtomicBool::new(false);
    let per_thread = rate / threads as f64;
    let produced = std::thread::scope(|s| {
        let producers: Vec<_> = (0..threads)
            .map(|t| {
                let client = client.clone();
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(t as u64 + 1));
                    let mut out = Produced::default();
                    let interval = Duration::from_secs_f64(1.0 / per_thread);
                    let mut n: u64 = 0;
                    while start.elapsed() < duration {
                        // Pace to the rate: catch up after a slow flush, never burst ahead.
                        let due = start + interval.mul_f64(n as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let score = Score::numeric(TRACE_ID, "soak", rng.gen_range(0.0..=1.0))
                            .metadata(json!({ "t": t, "n": n }));
                        match client.score(score) {
                            Ok(()) => {
                                if keep {
                                    out.accepted.insert((t as u64, n));
                                }
                            }
                            Err(ScoreError::QueueFull) => out.queue_full += 1,
                            Err(e) => {
                                eprintln!("soak: score() failed: {e}");
                                out.other_errors += 1;
                            }
                        }
                        n += 1;
                        if rng.gen_bool(pflush) {
                            let _ = client.flush(Duration::from_millis(rng.gen_range(1..1000)));
                            out.flushes += 1;
                        }
                    }
                    out
                })
            })
            .collect();
        let monitor = s.spawn(|| {
            let mut next = start + every;
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
                if Instant::now() >= next {
                    progress(start, &client, &server);
                    if !keep {
                        server.reset_records();
                    }
                    next += every;
                }
            }
        });
        let mut all = Produced::default();
        for p in producers {
            match p.join() {
                Ok(out) => {
                    all.accepted.extend(out.accepted);
                    all.queue_full += out.queue_full;
                    all.other_errors += out.other_errors;
                    all.flushes += out.flushes;
                }
                // Counted as an error: the checks below fail.
                Err(_) => all.other_errors += 1,
            }
        }
        done.store(true, Ordering::Release);
        let _ = monitor.join();
        all
    });

    println!("soak: scoring over after {:?}; flushing", start.elapsed());
    let flushed = client.flush(Duration::from_secs(120));
    let shutdown = client.shutdown(Duration::from_secs(10));
    // Slow answers store when their delay ends: wait until every request that will get a
    // status has one (the resets never do).
    let quiet = Instant::now() + Duration::from_secs(30);
    loop {
        let answered: u64 = (100..1000u16).map(|s| server.status_count(s) as u64).sum();
        if answered + chaos.unanswered() >= server.request_count() as u64 {
            break;
        }
        if Instant::now() > quiet {
            println!("soak: the server still has requests in progress");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    progress(start, &client, &server);

    let stats = client.stats();
    let s = stats.scores;
    let mut copies: HashMap<(u64, u64), u64> = HashMap::new();
    let mut foreign = 0u64;
    for stored in server.scores() {
        let m = &stored.body["metadata"];
        match (m["t"].as_u64(), m["n"].as_u64()) {
            (Some(t), Some(n)) => *copies.entry((t, n)).or_default() += 1,
            _ => foreign += 1,
        }
    }
    let accepted = &produced.accepted;
    let stored_total: u64 = copies.values().sum();
    let stored_unique = copies.len() as u64;
    let duplicated = stored_total - stored_unique;
    let missing = accepted.iter().filter(|k| !copies.contains_key(k)).count() as u64;
    let never_accepted = copies.keys().filter(|k| !accepted.contains(k)).count();
    println!(
        "soak: {s}; stored {stored_total} rows, {stored_unique} records, {duplicated} duplicates, \
         {missing} accepted records missing; requests sent {} ({:.3} per delivered record); \
         {} random flushes; answers: {}",
        stats.requests,
        stats.requests as f64 / s.sent.max(1) as f64,
        produced.flushes,
        chaos.summary(),
    );

    let mut checks: Vec<(&str, bool)> = vec![
        ("final flush completed", completed(&flushed)),
        ("shutdown completed", completed(&shutdown)),
        ("no unexpected score() error", produced.other_errors == 0),
        ("stats balanced", s.is_balanced()),
        ("nothing pending", s.pending == 0),
        (
            "accepted = sent + dropped",
            s.accepted == s.sent + s.dropped.total(),
        ),
        (
            "queue_full matches the producers' errors",
            s.dropped.queue_full == produced.queue_full,
        ),
    ];
    if keep {
        checks.extend([
            (
                "accepted = ok + queue_full",
                s.accepted == accepted.len() as u64 + produced.queue_full,
            ),
            (
                "no stored record was never accepted",
                never_accepted == 0 && foreign == 0,
            ),
            ("every sent record is stored", stored_unique >= s.sent),
            (
                "every missing record is counted as dropped",
                missing
                    <= s.dropped.retries_exhausted
                        + s.dropped.shutdown
                        + s.dropped.shutdown_in_flight,
            ),
            (
                "stored + missing = accepted",
                stored_unique + missing == accepted.len() as u64,
            ),
            (
                "duplicates <= ambiguous attempts",
                duplicated <= s.ambiguous,
            ),
        ]);
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
    if failed.is_empty() {
        println!("soak: PASS (seed {seed}, {:?})", start.elapsed());
        0
    } else {
        println!(
            "soak: FAIL (seed {seed}): {} (flush {flushed:?}, shutdown {shutdown:?})",
            failed.join("; ")
        );
        1
    }
}
