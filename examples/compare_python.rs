//! Side by side with the official Python SDK (`pandaprobe==0.6.0` from PyPI), against the same
//! in-process test server, in one run: the cost of one `score()` call (median, p99) and the
//! delivery rate (first `score()` to `flush()` returning, counted by the server); prints a
//! markdown table.
//!
//! ```text
//! cargo run --release --example compare_python [-- N]
//! ```
//!
//! 1. Starts a [`TestServer`] on `127.0.0.1` with its rate limits off (the real server takes
//!    200 scores a minute, which would measure only the limit) and everything else as the
//!    real server does it, and stores the trace both sides will score (sent by this SDK,
//!    untimed, before either run: the server refuses scores for traces it has not stored).
//! 2. Runs `benches/python/setup.sh` (a virtualenv with the pinned Python SDK; needs `python3`
//!    with `venv`, and PyPI the first time). Without them it says so and exits with success.
//! 3. Runs `benches/python/bench_python_sdk.py --n N` (default 2000) against the server and
//!    counts what the server stored (the script's own `delivered` is only an estimate).
//! 4. Runs the same N through this SDK with its default settings, against the same server
//!    (records reset): each `score()` call (building the score included, like the Python
//!    call) timed on its own, then `flush()`; delivered = the server's count.
//!
//! Both sides score one trace, given as text, with the name `"bench"` and the values
//! `"0.00"` .. `"0.99"`, NUMERIC.
//!
//! Measured ROUGHLY (2 vCPU AMD EPYC KVM guest, Python 3.11.7, 2026-11-29, with other builds
//! taking part of the CPU; to be re-measured on a quiet machine), two runs, Python / Rust:
//! `score()` median 20.5 / 0.28, 20.4 / 0.30 µs; p99 51.4 / 0.48, 118.2 / 0.97 µs; delivered
//! 884 / 29,321, 627 / 13,850 scores/s (the second run at load 8); the server stored
//! 2000 / 2000 on both sides both times.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pandaprobe::{Client, Score, Uuid};
use pandaprobe_testing::TestServer;
use serde_json::Value;

const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
const PROJECT: &str = "bench";

struct Side {
    median_ns: f64,
    p99_ns: f64,
    delivered: usize,
    seconds: f64,
}

impl Side {
    fn per_s(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2000,
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let server = TestServer::builder()
        .no_rate_limits()
        .record_requests(false)
        .start()?;

    let Some(python) = python_venv(root) else {
        return Ok(());
    };
    store_trace(&server)?;

    // --- Python ---------------------------------------------------------------------------
    eprintln!("compare_python: running the Python SDK, n = {n}");
    let output = Command::new(&python)
        .arg(format!("{root}/benches/python/bench_python_sdk.py"))
        .args(["--endpoint", &server.url()])
        .args(["--api-key", server.api_key()])
        .args(["--project", PROJECT])
        .args(["--n", &n.to_string()])
        .args(["--trace-id", TRACE_ID])
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("bench_python_sdk.py failed: {}", output.status).into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("bench_python_sdk.py printed nothing")?;
    let py: Value = serde_json::from_str(line)?;
    let num = |key: &str| -> Result<f64, String> {
        py[key]
            .as_f64()
            .ok_or_else(|| format!("bench_python_sdk.py: no number {key:?} in {line}"))
    };
    let stored_by_python = server.score_count();
    let python_side = Side {
        median_ns: num("score_ns_median")?,
        p99_ns: num("score_ns_p99")?,
        delivered: stored_by_python,
        seconds: num("seconds")?,
    };
    let flush_completed = py["flush_completed"].as_bool();
    let sdk_version = py["sdk_version"].as_str().unwrap_or("?").to_owned();
    let python_version = py["python_version"].as_str().unwrap_or("?").to_owned();
    server.reset_records();

    // --- Rust -----------------------------------------------------------------------------
    eprintln!("compare_python: running this SDK, n = {n}");
    let values: Vec<&'static str> = (0..100)
        .map(|i| &*Box::leak(format!("{:.2}", f64::from(i) / 100.0).into_boxed_str()))
        .collect();
    let client = Client::builder()
        .api_key(server.api_key())
        .project_name(PROJECT)
        .endpoint(server.url())
        .build()?;
    let mut durations = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let result = client.score(Score::new(TRACE_ID, "bench", values[i % 100]));
        durations.push(t0.elapsed());
        result?;
    }
    client.flush(Duration::from_secs(60))?;
    let seconds = start.elapsed().as_secs_f64();
    let stored_by_rust = server.score_count();
    let stats = client.stats().scores;
    if !stats.is_balanced() || stats.sent as usize != n {
        return Err(format!("this SDK did not deliver all {n}: {stats}").into());
    }
    durations.sort_unstable();
    let rust_side = Side {
        median_ns: nearest_rank(&durations, 50.0),
        p99_ns: nearest_rank(&durations, 99.0),
        delivered: stored_by_rust,
        seconds,
    };
    drop(client);

    // --- Table ----------------------------------------------------------------------------
    let (py, rs) = (&python_side, &rust_side);
    println!();
    println!(
        "| metric (n = {n}) | Python {sdk_version} | Rust {} | ratio |",
        env!("CARGO_PKG_VERSION")
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| `score()` median | {} | {} | {:.0}x less |",
        ns(py.median_ns),
        ns(rs.median_ns),
        py.median_ns / rs.median_ns
    );
    println!(
        "| `score()` p99 | {} | {} | {:.0}x less |",
        ns(py.p99_ns),
        ns(rs.p99_ns),
        py.p99_ns / rs.p99_ns
    );
    println!(
        "| delivered per second (first `score()` to `flush()` returning) | {:.0} | {:.0} | {:.1}x more |",
        py.per_s(),
        rs.per_s(),
        rs.per_s() / py.per_s()
    );
    println!(
        "| stored by the server | {} / {n} | {} / {n} | |",
        py.delivered, rs.delivered
    );
    println!(
        "| first `score()` to `flush()` returning | {:.3} s | {:.3} s | {:.1}x less |",
        py.seconds,
        rs.seconds,
        py.seconds / rs.seconds
    );
    println!();
    println!(
        "Machine: {} cores, {}; Python {python_version}; server: pandaprobe_testing::TestServer on 127.0.0.1 \
         (rate limits off; traces stored after their 202, as on the real server). \
         Python flush completed: {}.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        flush_completed.map_or("unknown".to_owned(), |b| b.to_string()),
    );
    if py.delivered != n || rs.delivered != n {
        eprintln!("compare_python: WARNING: not every score was stored (see the table)");
    }
    Ok(())
}

/// Sends the trace both sides score, with a client of its own, and waits until the server has
/// stored it.
fn store_trace(server: &TestServer) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder()
        .api_key(server.api_key())
        .project_name(PROJECT)
        .endpoint(server.url())
        .build()?;
    client
        .trace("compare-python")
        .trace_id(Uuid::parse_str(TRACE_ID)?)
        .start()
        .end();
    client.flush(Duration::from_secs(30))?;
    if !server.wait_for_stored_traces(1, Duration::from_secs(30)) {
        return Err("the server did not store the trace".into());
    }
    server.reset_records();
    Ok(())
}

/// Runs `benches/python/setup.sh` and returns the venv's python, or `None` (after saying why)
/// when Python, its venv module or the package index is not available.
fn python_venv(root: &str) -> Option<String> {
    let python3 = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(python3, Ok(s) if s.success()) {
        println!("compare_python: SKIPPED: python3 is not available");
        return None;
    }
    let setup = Command::new("bash")
        .arg(format!("{root}/benches/python/setup.sh"))
        .stderr(Stdio::inherit())
        .output();
    match setup {
        Ok(out) if out.status.success() => {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if path.is_empty() {
                println!("compare_python: SKIPPED: setup.sh printed no interpreter path");
                None
            } else {
                Some(path)
            }
        }
        Ok(out) => {
            println!(
                "compare_python: SKIPPED: benches/python/setup.sh failed ({}): python3 needs \
                 venv and pip, and PyPI must be reachable the first time",
                out.status
            );
            None
        }
        Err(e) => {
            println!("compare_python: SKIPPED: cannot run bash benches/python/setup.sh: {e}");
            None
        }
    }
}

/// The nearest-rank percentile, as `bench_python_sdk.py` computes it.
fn nearest_rank(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q / 100.0).ceil() as usize).max(1);
    sorted[rank - 1].as_nanos() as f64
}

fn ns(v: f64) -> String {
    if v >= 1_000.0 {
        format!("{:.1} µs", v / 1000.0)
    } else {
        format!("{v:.0} ns")
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
