//! The chaos run: the server answers each score request at random (201, 500, 502, 503, a delay
//! shorter or longer than the request timeout, a reset, a store-then-reset) while four producer
//! threads score and call `flush()` at random points. Afterwards every record is accounted
//! for: the stats identity holds, every record counted as sent is on the server, every
//! accepted record is on the server or counted as dropped, each record kept one request id,
//! and duplicates never outnumber the ambiguous attempts.
//!
//! The seed comes from `CHAOS_SEED` (default below) and is printed in every assertion message
//! and in the report: `CHAOS_SEED=123 cargo test --test chaos -- --nocapture`. The same seed
//! gives the same sequence of answers, although thread timing decides which request gets which.
//!
//! No 429s here: the server's 429 names its limit, which the client then keeps to (see
//! `rate_limits.rs`).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client_for, lenient_server, TRACE_ID};
use pandaprobe::{DropReason, FlushError, Score, ScoreError};
use pandaprobe_testing::{Fault, SCORES_PATH};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const DEFAULT_SEED: u64 = 0x00c4_a05e;
const THREADS: usize = 4;
const PER_THREAD: usize = 1_500;
const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

/// The answers, with their weights out of 1000.
const ANSWERS: [(&str, u32); 8] = [
    ("201", 800),
    ("500", 50),
    ("503", 50),
    ("502", 10),
    ("short delay", 30),
    ("delay past the timeout", 10),
    ("reset", 25),
    ("store then reset", 25),
];

fn seed() -> u64 {
    match std::env::var("CHAOS_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_SEED={v:?} is not a u64")),
        Err(_) => DEFAULT_SEED,
    }
}

fn pick(rng: &mut StdRng) -> (usize, Option<Fault>) {
    let total: u32 = ANSWERS.iter().map(|a| a.1).sum();
    let mut roll = rng.gen_range(0..total);
    let mut which = 0;
    for (i, (_, weight)) in ANSWERS.iter().enumerate() {
        if roll < *weight {
            which = i;
            break;
        }
        roll -= weight;
    }
    let timeout_ms = REQUEST_TIMEOUT.as_millis() as u64;
    let fault = match which {
        0 => None,
        1 => Some(Fault::Status(500)),
        2 => Some(Fault::Status(503)),
        3 => Some(Fault::Status(502)),
        4 => Some(Fault::Delay(Duration::from_millis(
            rng.gen_range(1..timeout_ms / 2),
        ))),
        5 => Some(Fault::Delay(Duration::from_millis(
            rng.gen_range(timeout_ms * 3 / 2..timeout_ms * 2),
        ))),
        6 => Some(Fault::Reset),
        _ => Some(Fault::StoreThenReset),
    };
    (which, fault)
}

/// What one producer saw: the records `score()` took, its `QueueFull` errors, and its random
/// flushes that succeeded and that did not.
type Producer = (HashSet<(u64, u64)>, u64, u64, u64);

/// The `(thread, n)` a record was made with, from its metadata.
fn key_of(body: &serde_json::Value) -> Option<(u64, u64)> {
    Some((
        body["metadata"]["t"].as_u64()?,
        body["metadata"]["n"].as_u64()?,
    ))
}

#[test]
fn chaos_every_record_is_accounted_for() {
    let seed = seed();
    let ctx = format!("CHAOS_SEED={seed}");
    let started = Instant::now();
    let server = lenient_server();
    let injected: Arc<Vec<AtomicU64>> =
        Arc::new(ANSWERS.iter().map(|_| AtomicU64::new(0)).collect());
    {
        let rng = Mutex::new(StdRng::seed_from_u64(seed));
        let injected = Arc::clone(&injected);
        server.set_responder(move |request| {
            if request.path != SCORES_PATH {
                return None;
            }
            let (which, fault) = pick(&mut rng.lock().unwrap_or_else(|e| e.into_inner()));
            injected[which].fetch_add(1, Ordering::Relaxed);
            fault
        });
    }
    let client = client_for(&server)
        .flush_interval(Duration::from_millis(20))
        .max_queue_size(THREADS * PER_THREAD)
        .request_timeout(REQUEST_TIMEOUT)
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .max_retry_after(Duration::from_millis(100))
        .retry_max_elapsed(Duration::from_secs(20))
        // Few retries, so that some records run out of them: drops are part of the accounting.
        .max_retries(3)
        .build()
        .expect("client");

    // Producers: score, and now and then flush with a random timeout.
    let outcomes: Vec<Producer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let client = client.clone();
                s.spawn(move || {
                    let mut rng =
                        StdRng::seed_from_u64(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9));
                    let mut accepted = HashSet::new();
                    let (mut full, mut flush_ok, mut flush_err) = (0, 0, 0);
                    for n in 0..PER_THREAD {
                        let score = Score::numeric(TRACE_ID, "chaos", rng.gen_range(0.0..=1.0))
                            .metadata(json!({ "t": t, "n": n }));
                        match client.score(score) {
                            Ok(()) => {
                                accepted.insert((t as u64, n as u64));
                            }
                            Err(ScoreError::QueueFull) => full += 1,
                            Err(e) => panic!("CHAOS_SEED={seed}: score() failed: {e}"),
                        }
                        if rng.gen_ratio(1, 300) {
                            let timeout = Duration::from_millis(rng.gen_range(1..300));
                            match client.flush(timeout) {
                                Ok(()) => flush_ok += 1,
                                Err(FlushError::Timeout { .. } | FlushError::Dropped { .. }) => {
                                    flush_err += 1
                                }
                                Err(e) => panic!("CHAOS_SEED={seed}: flush failed: {e}"),
                            }
                        }
                    }
                    (accepted, full, flush_ok, flush_err)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("CHAOS_SEED={seed}: a producer panicked"))
            })
            .collect()
    });
    let produced = started.elapsed();
    let accepted_keys: HashSet<(u64, u64)> =
        outcomes.iter().flat_map(|o| o.0.iter().copied()).collect();
    let queue_full: u64 = outcomes.iter().map(|o| o.1).sum();
    let flushes_ok: u64 = outcomes.iter().map(|o| o.2).sum();
    let flushes_not_ok: u64 = outcomes.iter().map(|o| o.3).sum();

    // Everything reaches its outcome; some records may have run out of retries.
    match client.flush(Duration::from_secs(30)) {
        Ok(()) => {}
        Err(FlushError::Dropped {
            reason: DropReason::RetriesExhausted,
            ..
        }) => {}
        Err(e) => panic!("{ctx}: final flush: {e}"),
    }
    assert_eq!(
        client.shutdown(Duration::from_secs(5)),
        Ok(()),
        "{ctx}: shutdown"
    );
    // Delayed attempts store when their delay ends, even after the client gave up on them.
    assert!(
        common::wait_until(Duration::from_secs(10), || !server.requests().iter().any(
            |r| {
                r.status.is_none() && !matches!(r.fault, Some(Fault::Reset | Fault::StoreThenReset))
            }
        )),
        "{ctx}: delayed requests never finished"
    );
    let elapsed = started.elapsed();

    let stats = client.stats();
    let s = stats.scores;
    let mut copies: HashMap<(u64, u64), u64> = HashMap::new();
    for stored in server.scores() {
        let key = key_of(&stored.body)
            .unwrap_or_else(|| panic!("{ctx}: a stored score without its key: {}", stored.body));
        *copies.entry(key).or_default() += 1;
    }
    let stored_total: u64 = copies.values().sum();
    let stored_unique = copies.len() as u64;
    let duplicated = stored_total - stored_unique;
    let missing = accepted_keys
        .iter()
        .filter(|k| !copies.contains_key(k))
        .count() as u64;

    let names: Vec<String> = ANSWERS
        .iter()
        .zip(injected.iter())
        .map(|((name, _), n)| format!("{name} {}", n.load(Ordering::Relaxed)))
        .collect();
    eprintln!(
        "[chaos {ctx}] {} records from {THREADS} threads in {produced:?} (total {elapsed:?}); \
         {s}; server stored {stored_total} rows, {stored_unique} records, {duplicated} \
         duplicate rows, {missing} accepted records missing; requests sent {} seen {}; random \
         flushes ok {flushes_ok}, not ok {flushes_not_ok}; answers: {}",
        THREADS * PER_THREAD,
        stats.requests,
        server.request_count(),
        names.join(", "),
    );

    // The stats identity, and the counts the producers saw.
    assert!(s.is_balanced(), "{ctx}: {s}");
    assert_eq!(s.pending, 0, "{ctx}: {s}");
    assert_eq!(s.accepted, (THREADS * PER_THREAD) as u64, "{ctx}: {s}");
    assert_eq!(s.dropped.queue_full, queue_full, "{ctx}: {s}");
    assert_eq!(accepted_keys.len() as u64 + queue_full, s.accepted, "{ctx}");
    assert_eq!(
        s.dropped.total(),
        s.dropped.queue_full + s.dropped.retries_exhausted,
        "{ctx}: nothing here is final, and the final flush delivered everything: {s}"
    );
    // Only accepted records reach the server, each always with the same request id.
    for key in copies.keys() {
        assert!(
            accepted_keys.contains(key),
            "{ctx}: the server stored {key:?}, never accepted"
        );
    }
    common::assert_request_ids_stable(&server);
    // Nothing missing: every record counted as sent is on the server; a record not on the
    // server was counted as dropped.
    assert!(
        stored_unique >= s.sent,
        "{ctx}: {stored_unique} records stored, {} counted sent",
        s.sent
    );
    assert!(
        missing <= s.dropped.retries_exhausted,
        "{ctx}: {missing} accepted records are missing but only {} were dropped",
        s.dropped.retries_exhausted
    );
    assert_eq!(stored_unique + missing, accepted_keys.len() as u64, "{ctx}");
    // A record on the server counted as dropped: an ambiguous attempt stored it, then its
    // retries ran out. Never more of those than drops.
    assert!(
        stored_unique - s.sent <= s.dropped.retries_exhausted,
        "{ctx}: {} stored records are not counted as sent",
        stored_unique - s.sent
    );
    // Duplicates only from ambiguous attempts.
    assert!(
        duplicated <= s.ambiguous,
        "{ctx}: {duplicated} duplicate rows but only {} ambiguous attempts",
        s.ambiguous
    );
    assert!(
        s.retried > 0 && s.ambiguous > 0,
        "{ctx}: the chaos did not bite: {s}"
    );
}
