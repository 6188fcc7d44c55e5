//! The distribution of one `score()` call's cost (median, p90, p99, p99.9, max) on an accepting
//! client whose worker is running and delivering to the in-process test server, each call
//! timed on its own with `Instant` (criterion in `benches/score.rs` only gives medians).
//!
//! ```text
//! cargo run --release --example latency                  # 1,000,000 calls per path
//! cargo run --release --example latency -- 100000 10     # CALLS [BATCH_SIZE]
//! ```
//!
//! BATCH_SIZE (default the SDK's, 100) sets the clients' `batch_size`: how many queued records
//! wake the worker.
//!
//! Runs:
//!
//! 1. `score()` alone, the `Score` built before the timer starts (CALLS calls per path);
//! 2. building the `Score` and `score()`, as a caller pays it (CALLS calls per path);
//! 3. the same, paced: the producer sleeps 50 µs before each call (in practice one call every
//!    ~110 µs), like a request handler that scores once per request. It no longer outruns
//!    delivery, so the worker parks between batches and one call per batch pays for waking it
//!    (CALLS / 20 calls, string and typed paths);
//! 4. the same, paced by spinning 50 µs instead (20,000 calls a second): the producer keeps its
//!    core busy, so on a 2-core machine it shares the CPU with the worker and the server.
//!
//! Allocations made by the calling thread are counted (a counting global allocator) and
//! printed per call: the typed path must make none.
//!
//! The server is `lenient()` (no rate limits, scores accepted for any trace): this measures
//! the caller's cost, not the real server's 200 scores a minute. Every client's queue holds
//! every call, so each call takes the accepting path (checked: nothing dropped). The cost of
//! two `Instant::now()` around nothing is measured the same way and printed first; the other
//! figures include it.
//!
//! Measured ROUGHLY (2 vCPU AMD EPYC KVM guest, 2026-11-29, default 1,000,000 calls, with other
//! builds still taking part of the CPU, load average about 2; `Instant` pair alone: median
//! 40 ns, p99 41 ns; to be re-measured on a quiet machine), in ns, median / p99 / p99.9, and
//! allocations per call on the calling thread:
//!
//! ```text
//!                          str (Score::new)      typed (Score::numeric)   owned (3 Strings)
//! score() alone            200 / 351 / 741       80 / 100 / 130           210 / 351 / 661
//! building + score()       271 / 401 / 832       100 / 140 / 500          331 / 561 / 1062
//! paced, sleep 50 µs      1743 / 2996 / 16761    571 / 1102 / 2214
//! paced, spin 50 µs        281 / 551 / 3055      100 / 221 / 1202
//! allocations per call     2                     0                        5
//! ```
//!
//! The `str` path's two allocations are the NUMERIC value's validation
//! (`python_float::parse` copies the text twice); the typed path makes none.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use pandaprobe::{Client, Score, Uuid};
use pandaprobe_testing::TestServer;

const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
/// The pause before each paced call: below what the SDK delivers with its defaults.
const PACE: Duration = Duration::from_micros(50);

/// The system allocator, counting the allocations of each thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialised thread-local without a destructor, so it never allocates itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    ScoreOnly,
    WithBuild,
    PacedSleep,
    PacedSpin,
}

type Make = fn(Uuid) -> Score;

fn main() -> Result<(), Box<dyn Error>> {
    let calls: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let batch_size: usize = match std::env::args().nth(2) {
        Some(n) => n.parse()?,
        None => pandaprobe::DEFAULT_BATCH_SIZE,
    };
    if calls < 20 {
        return Err("CALLS must be at least 20 (the paced runs make CALLS / 20 calls)".into());
    }
    println!("calls {calls}, batch_size {batch_size}");
    let server = TestServer::builder()
        .lenient()
        .record_requests(false)
        .start()?;
    let id = Uuid::parse_str(TRACE_ID)?;

    let mut clock = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        black_box(());
        clock.push(start.elapsed());
    }
    report("Instant::now() pair (timer overhead)", &mut clock);

    let paths: [(&str, Make); 3] = [
        (
            "str   Score::new(\"<uuid>\", \"name\", \"0.5\")        ",
            |_| Score::new(black_box(TRACE_ID), "name", "0.5"),
        ),
        (
            "typed Score::numeric(Uuid, \"name\", 0.5)           ",
            |id| Score::numeric(*black_box(&id), "name", *black_box(&0.5)),
        ),
        ("owned Score::new(String, String(16), String(4))  ", |_| {
            Score::new(
                black_box(TRACE_ID).to_owned(),
                black_box("answer_relevance").to_owned(),
                black_box("0.42").to_owned(),
            )
        }),
    ];
    let runs = [
        (
            Mode::ScoreOnly,
            "score() alone (Score built before the timer starts)".to_owned(),
        ),
        (Mode::WithBuild, "building the Score + score()".to_owned()),
        (
            Mode::PacedSleep,
            format!(
                "building the Score + score(), sleeping {PACE:?} before each call, {} calls",
                calls / 20
            ),
        ),
        (
            Mode::PacedSpin,
            format!(
                "building the Score + score(), one call every {PACE:?} (spinning), {} calls",
                calls / 20
            ),
        ),
    ];
    for (mode, title) in runs {
        println!("-- {title}");
        let paced = matches!(mode, Mode::PacedSleep | Mode::PacedSpin);
        for (name, make) in paths.iter().take(if paced { 2 } else { 3 }) {
            measure(&server, calls, batch_size, id, name, *make, mode)?;
        }
    }
    Ok(())
}

fn measure(
    server: &TestServer,
    calls: usize,
    batch_size: usize,
    id: Uuid,
    name: &str,
    make: Make,
    mode: Mode,
) -> Result<(), Box<dyn Error>> {
    let calls = match mode {
        Mode::PacedSleep | Mode::PacedSpin => calls / 20,
        Mode::ScoreOnly | Mode::WithBuild => calls,
    };
    let client = Client::builder()
        .api_key(server.api_key())
        .project_name("bench")
        .endpoint(server.url())
        .max_queue_size(calls + 20_000)
        .batch_size(batch_size)
        .shutdown_timeout(Duration::from_millis(1))
        .build()?;
    // Warm up: the worker's connections, the allocator.
    for _ in 0..10_000 {
        client.score(make(id))?;
    }
    client.flush(Duration::from_secs(30))?;
    let mut times = Vec::with_capacity(calls);
    let mut refused = 0usize;
    let mut next = Instant::now();
    let allocations_before = allocations();
    for _ in 0..calls {
        let (start, result) = match mode {
            Mode::ScoreOnly => {
                let score = make(id);
                let start = Instant::now();
                (start, client.score(score))
            }
            Mode::WithBuild => {
                let start = Instant::now();
                (start, client.score(make(id)))
            }
            Mode::PacedSleep => {
                std::thread::sleep(PACE);
                let start = Instant::now();
                (start, client.score(make(id)))
            }
            Mode::PacedSpin => {
                next += PACE;
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                let start = Instant::now();
                (start, client.score(make(id)))
            }
        };
        times.push(start.elapsed());
        refused += usize::from(result.is_err());
    }
    let allocated = allocations() - allocations_before;
    let stats = client.stats().scores;
    if refused > 0 || stats.dropped.queue_full > 0 || !stats.is_balanced() {
        return Err(
            format!("score() refused {refused} calls on an accepting client: {stats}").into(),
        );
    }
    report(name, &mut times);
    println!(
        "      allocations on the calling thread per call: {:.2}",
        allocated as f64 / calls as f64
    );
    drop(client);
    server.reset_records();
    Ok(())
}

fn report(name: &str, times: &mut [Duration]) {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_nanos();
    let mean = times.iter().sum::<Duration>().as_nanos() / times.len() as u128;
    println!(
        "{name} n={:>7}  median {:>4} ns  p90 {:>5} ns  p99 {:>5} ns  p99.9 {:>6} ns  \
         p99.99 {:>6} ns  max {:>9} ns  mean {mean} ns",
        times.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(0.9999),
        times[times.len() - 1].as_nanos(),
    );
}
