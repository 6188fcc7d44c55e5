//! The trace gate on a virtual clock: instants are passed in, nothing sleeps.

use super::*;
use crate::worker::storage_model::BASE;

const MS: Duration = Duration::from_millis(1);

fn gate(capacity: usize) -> (TraceGate<u32>, Instant) {
    let now = Instant::now();
    (TraceGate::new(capacity, now), now)
}

#[test]
fn scores_of_other_traces_go_at_once_and_held_ones_wait_for_the_trace() {
    let (mut g, t0) = gate(100);
    let (a, other) = (Uuid::new_v4(), Uuid::new_v4());
    g.trace_queued(a, vec![1, 2]);
    assert_eq!(g.admit(other, 9), Some(9));
    assert_eq!(g.admit(a, 3), None);
    assert_eq!(g.held(), 3);
    assert!(g.due(t0 + 10_000 * MS).is_empty(), "not accepted yet");
    g.trace_accepted(a, 0, t0);
    let due = g.next_due().expect("a probe time");
    assert_eq!(due, t0 + BASE, "a small trace's storing time");
    assert!(g.due(due - MS).is_empty());
    assert_eq!(g.due(due), [(1, Some(Probe::Due))], "one probe");
    assert_eq!(g.admit(a, 4), None, "still held while the probe is out");
    assert_eq!(g.probe_delivered(a, Probe::Due, due + MS), [2, 3, 4]);
    assert_eq!(g.held(), 0);
    assert_eq!(g.admit(a, 5), Some(5), "a stored trace holds nothing");
}

#[test]
fn a_trace_found_not_stored_holds_its_scores_and_delays_later_traces() {
    let (mut g, t0) = gate(100);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    g.trace_queued(a, vec![1, 2, 3]);
    g.trace_queued(b, vec![4]);
    g.trace_queued(c, vec![5]);
    for id in [a, b, c] {
        g.trace_accepted(id, 0, t0);
    }
    let first = g.next_due().expect("due");
    assert_eq!(first, t0 + BASE);
    assert_eq!(
        g.due(first),
        [(1, Some(Probe::Due)), (4, Some(Probe::Due))],
        "two at a time"
    );
    let answered = first + 10 * MS;
    g.probe_not_stored(a, 1, Probe::Due, answered);
    assert_eq!(g.held(), 4, "nothing was lost or sent");
    let again = g.next_due().expect("due");
    assert_eq!(
        again,
        answered + (answered - t0),
        "as long again as it waited"
    );
    assert!(
        g.due(again - MS).is_empty(),
        "c, modelled stored at twice BASE, queued behind a, was pushed back with it"
    );
    let mut due = g.due(again);
    due.sort_unstable_by_key(|(job, _)| *job);
    assert_eq!(due, [(1, Some(Probe::Due)), (5, Some(Probe::Due))]);
    assert_eq!(g.probe_delivered(a, Probe::Due, again), [2, 3]);
}

#[test]
fn a_dropped_trace_takes_its_scores_and_a_forgotten_one_holds_nothing() {
    let (mut g, t0) = gate(100);
    let a = Uuid::new_v4();
    g.trace_queued(a, vec![1]);
    assert_eq!(g.admit(a, 2), None);
    assert_eq!(g.trace_dropped(a), [1, 2]);
    assert_eq!(g.held(), 0);
    let b = Uuid::new_v4();
    g.trace_queued(b, vec![]);
    g.trace_accepted(b, 0, t0);
    assert!(g.due(t0 + 10 * 1000 * MS).is_empty());
    assert_eq!(g.admit(b, 3), Some(3), "its time passed: probably stored");
}

#[test]
fn piling_up_probes_the_newest_storable_trace_early_and_success_releases_the_older() {
    let (mut g, t0) = gate(8);
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        g.trace_queued(*id, vec![i as u32 * 10, i as u32 * 10 + 1]);
        g.trace_accepted(*id, 0, t0); // modelled: two stored at BASE, two at twice that
    }
    assert_eq!(g.next_due(), Some(t0), "pressure: an early probe may go");
    assert!(g.due(t0).is_empty(), "but no trace can be stored yet");
    assert_eq!(
        g.next_due(),
        Some(t0 + BASE),
        "again when the newest can be stored: no spinning"
    );
    let t = t0 + BASE;
    assert_eq!(
        g.due(t),
        [
            (0, Some(Probe::Due)),
            (10, Some(Probe::Due)),
            (30, Some(Probe::Early))
        ],
        "the two due, and the newest early"
    );
    let newest = Uuid::new_v4();
    g.trace_queued(newest, vec![40]);
    g.trace_accepted(newest, 0, t); // timed by the slower model: twice BASE on
    assert_eq!(g.probe_delivered(ids[3], Probe::Early, t + MS), [31]);
    assert_eq!(
        g.due(t + MS),
        [(20, Some(Probe::Due))],
        "the older one waiting is probed at once"
    );
    assert_eq!(
        g.due(t + MS + BASE),
        [(40, Some(Probe::Due))],
        "the newer one when the faster model has it stored, not when the slower one said"
    );
}

#[test]
fn a_failed_early_probe_backs_off_and_keeps_the_predicted_time() {
    let (mut g, t0) = gate(4);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    g.trace_queued(a, vec![1]);
    g.trace_queued(b, vec![2]);
    g.trace_queued(c, vec![3, 4]);
    g.trace_accepted(a, 500, t0);
    g.trace_accepted(b, 500, t0);
    g.trace_accepted(c, 0, t0); // queued behind two big ones
    let t = t0 + BASE;
    assert_eq!(g.due(t), [(3, Some(Probe::Early))]);
    assert!(g.due(t).is_empty(), "one early probe at a time");
    g.probe_not_stored(c, 3, Probe::Early, t + MS);
    let first_timer = g.timers.first_key_value().map(|(k, _)| k.0);
    assert!(first_timer.is_some_and(|at| at > t0 + Duration::from_secs(8)));
    assert_eq!(g.next_due(), Some(t + MS + Duration::from_secs(1)));
}

#[test]
fn near_shutdown_each_trace_due_after_its_deadline_gets_one_last_chance() {
    let (mut g, t0) = gate(100);
    let (small, big, bigger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    g.trace_queued(small, vec![1]);
    g.trace_queued(big, vec![2, 3]);
    g.trace_queued(bigger, vec![4, 5]);
    g.trace_accepted(small, 0, t0); // modelled stored at BASE
    g.trace_accepted(big, 500, t0); // about 8.5 s
    g.trace_accepted(bigger, 600, t0); // about 10 s
    let deadline = t0 + Duration::from_secs(2);
    assert_eq!(
        g.last_chance(deadline),
        [(2, Probe::LastChance), (4, Probe::LastChance)],
        "not the small one: its own probe comes before the deadline"
    );
    assert!(
        g.last_chance(deadline).is_empty(),
        "one each, however often asked"
    );
    let t = deadline - Duration::from_millis(500);
    g.probe_not_stored(big, 2, Probe::LastChance, t);
    assert!(g.last_chance(deadline).is_empty(), "not again after a miss");
    assert_eq!(
        g.held(),
        4,
        "the miss waits with its sibling; one probe still out"
    );
    assert_eq!(
        g.probe_delivered(bigger, Probe::LastChance, t),
        [5],
        "stored after all: its scores go"
    );
    assert_eq!(
        g.due(t),
        [(1, Some(Probe::Due)), (2, Some(Probe::Due))],
        "the older ones are stored too: probed at once"
    );
}

#[test]
fn memory_is_bounded() {
    let (mut g, t0) = gate(2);
    g.trace_queued(Uuid::new_v4(), vec![1, 2]);
    assert!(g.is_full());
    for i in 0..5000 {
        let id = Uuid::new_v4();
        g.trace_queued(id, vec![]);
        g.trace_accepted(id, 0, t0 + MS * i);
    }
    assert!(g.remembered() <= 1024 + 1024 / 4 + 1, "{}", g.remembered());
    assert_eq!(g.drain().len(), 2);
    assert_eq!(g.held(), 0);
}

#[test]
fn scores_for_a_trace_still_open_wait_for_it_to_end_or_for_its_hold_to_pass() {
    let (mut g, t0) = gate(100);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let hold = Duration::from_secs(60);
    g.trace_opened(a, hold, t0);
    assert_eq!(g.admit(a, 1), None, "held while open");
    g.trace_queued(a, vec![2]);
    g.trace_accepted(a, 0, t0);
    assert!(
        g.due(t0 + hold).iter().all(|(_, p)| p.is_some()),
        "a normal probe"
    );

    g.trace_opened(b, hold, t0);
    assert_eq!(g.admit(b, 3), None);
    assert_eq!(
        g.due(t0 + hold),
        [(3, None)],
        "left open too long: sent anyway"
    );
    assert_eq!(g.admit(b, 4), Some(4));

    g.trace_opened(c, hold, t0);
    assert_eq!(g.admit(c, 5), None);
    assert_eq!(
        g.trace_abandoned(c),
        [5],
        "it could not be queued: no reason to wait"
    );
    assert_eq!(g.held(), 1, "only a's second score, its probe out");
}

#[test]
fn a_full_gate_lets_the_scores_of_the_trace_open_longest_go() {
    let (mut g, t0) = gate(3);
    let (old, young) = (Uuid::new_v4(), Uuid::new_v4());
    let hold = Duration::from_secs(3600);
    g.trace_opened(old, hold, t0);
    g.trace_opened(young, hold, t0 + MS);
    assert_eq!(g.admit(old, 1), None);
    assert_eq!(g.admit(young, 2), None);
    assert!(g.make_room().is_empty(), "room left");
    assert_eq!(g.admit(old, 3), None);
    assert!(g.is_full());
    assert_eq!(g.make_room(), [1, 3]);
    assert_eq!((g.held(), g.is_open(&old)), (1, true));
}
