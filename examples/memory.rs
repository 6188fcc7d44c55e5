//! Memory per queued score: the growth of the process's peak RSS when a 100,000-slot queue is
//! full of typical scores, divided by the 100,000 (target: at most 256 bytes). Linux only (it
//! reads `/proc/self/status`); elsewhere it says so and exits.
//!
//! ```text
//! cargo run --release --example memory            # typical scores
//! cargo run --release --example memory -- static  # &'static name and value
//! ```
//!
//! A typical score: a trace id given as text, an owned 16-character name, an owned 4-character
//! value, no reason, no metadata. The server never answers (`Fault::Hang`), so the worker takes
//! what it may hold (its in-flight window) and the queue fills up and stays full. `VmRSS` and
//! `VmHWM` are read before the client is built, after it is built and after the queue is full;
//! the cost per queued score is the growth of the peak divided by the queue's 100,000 slots
//! (so the worker's fixed costs and the records it holds are charged to the queued scores too).
//!
//! Measured (2 vCPU AMD EPYC KVM guest, Linux, 2026-11-29, the SDK as of that evening):
//! typical scores 170.5 bytes per queued score (VmRSS 3.3 MiB before, 17.3 MiB with the empty
//! client, whose queue is reserved up front, 19.6 MiB with the queue full and the worker
//! holding 1,024 with 32 in flight; the filling alone 23.8 bytes a score). An hour earlier,
//! before other changes to the SDK, 138.2 bytes (`static`: 137.4). `Score` is 88 bytes.

#[cfg(not(target_os = "linux"))]
fn main() {
    println!(
        "the memory example reads /proc/self/status, which only Linux has; \
         run it on Linux to measure memory per queued score"
    );
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    linux::run()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::error::Error;
    use std::time::{Duration, Instant};

    use pandaprobe::{Client, Score, ScoreError, Uuid};
    use pandaprobe_testing::{Fault, TestServer};

    const QUEUE: usize = 100_000;

    /// Resident and peak resident memory, in KiB.
    #[derive(Clone, Copy, Debug)]
    struct Mem {
        rss_kib: u64,
        hwm_kib: u64,
    }

    fn mem() -> Result<Mem, Box<dyn Error>> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| -> Result<u64, Box<dyn Error>> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("{name} missing from /proc/self/status").into())
        };
        Ok(Mem {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    pub(crate) fn run() -> Result<(), Box<dyn Error>> {
        let statics = match std::env::args().nth(1).as_deref() {
            None | Some("typical") => false,
            Some("static") => true,
            Some(other) => return Err(format!("unknown mode {other:?}: typical or static").into()),
        };
        let make = |i: usize| -> Score {
            // One trace per ten scores, its id given as text as applications usually have it.
            let trace_id =
                Uuid::from_u128(0x29c1_60fc_44bc_41ad_8bec_0000_0000_0000 + (i / 10) as u128)
                    .to_string();
            if statics {
                Score::new(trace_id, "metric_name_0001", "0.42")
            } else {
                Score::new(
                    trace_id,
                    format!("metric_name_{:04}", i % 10_000), // 16 characters
                    format!("0.{:02}", i % 100),              // 4 characters
                )
            }
        };

        let server = TestServer::builder()
            .lenient()
            .record_requests(false)
            .start()?;
        server.set_responder(|_| Some(Fault::Hang));

        let before = mem()?;
        let client = Client::builder()
            .api_key(server.api_key())
            .project_name("bench")
            .endpoint(server.url())
            .max_queue_size(QUEUE)
            .request_timeout(Duration::from_secs(3600))
            .shutdown_timeout(Duration::from_millis(1))
            .build()?;
        let built = mem()?;

        // Fill: score until the queue has refused 10,000 in a row (the worker has taken all it
        // may by then), then check that the worker's requests reached the hanging server.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut i, mut refused_in_a_row) = (0usize, 0usize);
        while refused_in_a_row < 10_000 {
            if Instant::now() > deadline {
                return Err(format!("the queue never filled: {}", client.stats()).into());
            }
            match client.score(make(i)) {
                Ok(()) => refused_in_a_row = 0,
                Err(ScoreError::QueueFull) => refused_in_a_row += 1,
                Err(e) => return Err(e.into()),
            }
            i += 1;
        }
        if !server.wait_for_requests(1, Duration::from_secs(10)) {
            return Err("the worker never sent a request".into());
        }
        let full = mem()?;
        let stats = client.stats().scores;
        if !stats.is_balanced() || stats.sent != 0 {
            return Err(format!("unexpected counters with a hanging server: {stats}").into());
        }
        let in_queue = QUEUE as u64;
        let held_by_worker = stats.pending.saturating_sub(in_queue);

        let per = |kib: u64, n: u64| (kib * 1024) as f64 / n.max(1) as f64;
        let peak_growth = full.hwm_kib.saturating_sub(before.rss_kib);
        let rss_growth = full.rss_kib.saturating_sub(before.rss_kib);
        let fill_growth = full.rss_kib.saturating_sub(built.rss_kib);
        println!(
            "scores: {} (Score is {} bytes; queue {QUEUE}, worker holds {held_by_worker}, \
             {} in flight to the hanging server)",
            if statics {
                "trace id as text, &'static name and value"
            } else {
                "trace id as text, owned 16-char name, owned 4-char value"
            },
            std::mem::size_of::<Score>(),
            server.request_count(),
        );
        for (when, m) in [
            ("before client:", before),
            ("client built: ", built),
            ("queue full:   ", full),
        ] {
            println!("{when} VmRSS {} KiB, VmHWM {} KiB", m.rss_kib, m.hwm_kib);
        }
        println!(
            "peak (VmHWM) growth per queued score: {:.1} bytes  (target <= 256)",
            per(peak_growth, in_queue)
        );
        println!(
            "VmRSS growth per queued score: {:.1} bytes; per pending score (queue + worker): \
             {:.1} bytes; filling alone (after the empty client was built): {:.1} bytes",
            per(rss_growth, in_queue),
            per(rss_growth, stats.pending),
            per(fill_growth, in_queue),
        );
        drop(client);
        Ok(())
    }
}
