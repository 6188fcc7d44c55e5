//! The trace gate on a virtual clock: instants are passed in, nothing sleeps.

use super::*;

const MS: Duration = Duration::from_millis(1);
const MAX_WAIT: Duration = Duration::from_secs(60);

fn gate(capacity: usize) -> (TraceGate<u32>, Instant) {
    (TraceGate::new(capacity, MAX_WAIT), Instant::now())
}

#[test]
fn held_jobs_wait_until_a_probe_says_stored_and_other_traces_go_at_once() {
    let (mut g, t0) = gate(100);
    let (a, other) = (Uuid::new_v4(), Uuid::new_v4());
    g.trace_queued(a, vec![1, 2], ProbeRequest::Get);
    assert_eq!(g.admit(other, 9), Some(9));
    assert_eq!(g.admit(a, 3), None);
    assert_eq!(g.held(), 3);
    assert!(
        g.due_probes(t0 + 10_000 * MS, 8).is_empty(),
        "not accepted yet"
    );
    g.trace_accepted(a, t0);
    let first = g.next_due().expect("a probe time");
    assert_eq!(first, t0 + schedule::FIRST_PROBE);
    assert!(g.due_probes(first - MS, 8).is_empty());
    assert_eq!(g.due_probes(first, 8), [(a, ProbeRequest::Get)]);
    assert!(
        g.due_probes(first + 500 * MS, 8).is_empty(),
        "one out at a time"
    );
    assert_eq!(g.next_due(), None);
    let answered = first + 5 * MS;
    assert_eq!(
        g.probe_answered(a, Readiness::NotYet, answered),
        Released::Waiting
    );
    assert_eq!(g.held(), 3, "nothing lost, nothing sent");
    let again = g.next_due().expect("asked again");
    assert!(again > answered && again <= answered + 100 * MS);
    assert_eq!(g.admit(a, 4), None, "still held");
    assert_eq!(g.due_probes(again, 8).len(), 1);
    assert_eq!(
        g.probe_answered(a, Readiness::Stored, again + MS),
        Released::Go(vec![1, 2, 3, 4])
    );
    assert_eq!(g.held(), 0);
    assert_eq!(g.admit(a, 5), Some(5), "a stored trace holds nothing");
}

#[test]
fn a_trace_that_holds_nothing_is_remembered_for_scores_still_queued() {
    let (mut g, t0) = gate(100);
    let a = Uuid::new_v4();
    g.trace_queued(a, Vec::new(), ProbeRequest::Get);
    g.trace_accepted(a, t0);
    assert_eq!(g.next_due(), None, "nothing to ask about");
    let later = t0 + 500 * MS;
    assert_eq!(
        g.admit(a, 1),
        None,
        "a score taken after the 202 still waits"
    );
    assert_eq!(
        g.due_probes(later, 8),
        [(a, ProbeRequest::Get)],
        "asked at once"
    );
    assert_eq!(
        g.probe_answered(a, Readiness::Stored, later),
        Released::Go(vec![1])
    );
    // Idle ones are bounded.
    for i in 0..3000u32 {
        let id = Uuid::new_v4();
        g.trace_queued(id, Vec::new(), ProbeRequest::Get);
        g.trace_accepted(id, t0 + MS * i);
    }
    assert!(g.remembered() <= 1024, "{}", g.remembered());
}

#[test]
fn only_the_oldest_few_are_asked_and_a_stored_one_hurries_the_older() {
    let (mut g, t0) = gate(100);
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        g.trace_queued(*id, vec![i as u32], ProbeRequest::Get);
        g.trace_accepted(*id, t0);
    }
    let at = t0 + schedule::FIRST_PROBE;
    let due: Vec<Uuid> = g.due_probes(at, 8).into_iter().map(|(id, _)| id).collect();
    assert_eq!(due, ids[..PROBED_AT_ONCE], "the four oldest");
    let later = at + 5 * MS;
    g.probe_answered(ids[0], Readiness::NotYet, later);
    g.probe_answered(ids[1], Readiness::NotYet, later);
    // The fourth is stored before the first: the first two are asked again at once.
    assert_eq!(
        g.probe_answered(ids[3], Readiness::Stored, later),
        Released::Go(vec![3])
    );
    let due: Vec<Uuid> = g
        .due_probes(later, 8)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Stored at its first question, so the server keeps up: one more is asked too.
    assert_eq!(
        due,
        [ids[0], ids[1], ids[4], ids[5]],
        "older ones now, the next in line"
    );
    assert_eq!(g.due_probes(later, 0), [], "no room, no probe");
}

#[test]
fn a_server_that_keeps_up_gets_more_traces_asked_at_once() {
    let (mut g, t0) = gate(1000);
    let ids: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        g.trace_queued(*id, vec![i as u32], ProbeRequest::Get);
        g.trace_accepted(*id, t0);
    }
    let mut now = t0 + schedule::FIRST_PROBE;
    let mut widths = Vec::new();
    for _ in 0..5 {
        let due = g.due_probes(now, 1000);
        widths.push(due.len());
        for (id, _) in due {
            g.probe_answered(id, Readiness::Stored, now);
        }
        now += MS;
    }
    assert_eq!(
        widths,
        [4, 8, 16, 32, 40],
        "stored at the first question: wider"
    );
    let (mut g, t0) = gate(1000);
    for (i, id) in ids.iter().enumerate() {
        g.trace_queued(*id, vec![i as u32], ProbeRequest::Get);
        g.trace_accepted(*id, t0);
    }
    let now = t0 + schedule::FIRST_PROBE;
    for (id, _) in g.due_probes(now, 1000) {
        g.probe_answered(id, Readiness::Stored, now);
    }
    let mut now = now;
    for round in 0..3 {
        let due = g.due_probes(now, 1000);
        assert_eq!(
            due.len(),
            8,
            "a first or second miss is no sign of lag ({round})"
        );
        for (id, _) in due {
            g.probe_answered(id, Readiness::NotYet, now);
        }
        now = g.next_due().expect("asked again");
    }
    assert_eq!(g.due_probes(now, 1000).len(), 4, "behind: back to four");
}

#[test]
fn a_rate_limited_probe_waits_and_a_trace_never_stored_expires() {
    let (mut g, t0) = gate(100);
    let a = Uuid::new_v4();
    let span = ProbeRequest::Span(Bytes::from_static(b"[{}]"));
    g.trace_queued(a, vec![1, 2], span.clone());
    g.trace_accepted(a, t0);
    let at = t0 + schedule::FIRST_PROBE;
    assert_eq!(g.due_probes(at, 1), [(a, span)]);
    let wait = Duration::from_secs(30);
    g.probe_answered(a, Readiness::Paused(wait), at);
    assert_eq!(g.next_due(), Some(at + wait));
    let mut now = at + wait;
    while now - t0 < MAX_WAIT {
        assert_eq!(g.due_probes(now, 1).len(), 1);
        now += 500 * MS;
        if g.probe_answered(a, Readiness::NotYet, now) != Released::Waiting {
            break;
        }
        now = g.next_due().expect("asked again");
    }
    assert_eq!(g.held(), 0, "given up after the retry time");
    assert_eq!(g.admit(a, 3), Some(3));
}

#[test]
fn an_answer_no_probe_can_change_lets_the_jobs_go() {
    let (mut g, t0) = gate(100);
    let a = Uuid::new_v4();
    g.trace_queued(a, vec![1], ProbeRequest::Get);
    g.trace_accepted(a, t0);
    g.due_probes(t0 + MS * 20, 1);
    assert_eq!(
        g.probe_answered(a, Readiness::Unknowable, t0 + MS * 30),
        Released::Go(vec![1])
    );
}

#[test]
fn open_traces_hold_scores_until_they_end_or_their_time_runs_out() {
    let (mut g, t0) = gate(100);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let hold = Duration::from_secs(10);
    g.trace_opened(a, hold, t0);
    g.trace_opened(b, hold, t0 + MS);
    assert!(g.is_open(&a));
    assert_eq!(g.admit(a, 1), None);
    assert_eq!(g.admit(b, 2), None);
    assert_eq!(g.take_open(a), [1], "ended: its scores go with it");
    g.trace_queued(a, vec![1], ProbeRequest::Get);
    assert!(!g.is_open(&a));
    assert_eq!(g.next_due(), Some(t0 + MS + hold));
    assert_eq!(g.due_open(t0 + MS + hold), [2], "left open too long");
    assert_eq!(g.held(), 1);
}

#[test]
fn with_no_room_the_trace_open_longest_lets_its_scores_go() {
    let (mut g, t0) = gate(2);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    g.trace_opened(a, Duration::from_secs(10), t0);
    g.trace_opened(b, Duration::from_secs(10), t0 + MS);
    g.admit(b, 1);
    g.admit(a, 2);
    assert!(g.is_full());
    assert_eq!(g.make_room(), [2]);
    assert!(!g.is_full());
    assert_eq!(g.make_room(), Vec::<u32>::new());
}

#[test]
fn open_traces_that_hold_nothing_are_bounded() {
    let (mut g, t0) = gate(10);
    for i in 0..5000u64 {
        g.trace_opened(Uuid::new_v4(), Duration::from_secs(10), t0 + MS * i as u32);
    }
    assert!(g.remembered() <= 1024, "{}", g.remembered());
}

#[test]
fn a_dropped_trace_takes_its_jobs_and_drain_empties_the_gate() {
    let (mut g, t0) = gate(100);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    g.trace_queued(a, vec![1, 2], ProbeRequest::Get);
    g.trace_queued(b, vec![3], ProbeRequest::Get);
    g.trace_accepted(b, t0);
    assert_eq!(g.trace_dropped(a), [1, 2]);
    assert_eq!(g.drain(), [3]);
    assert_eq!(g.held(), 0);
    assert_eq!(g.next_due(), None);
}

#[test]
fn a_trace_sent_again_with_scores_after_its_202_is_asked_about() {
    let (mut g, t0) = gate(100);
    let a = Uuid::new_v4();
    g.trace_queued(a, Vec::new(), ProbeRequest::Get);
    g.trace_accepted(a, t0);
    assert_eq!(g.next_due(), None, "idle");
    g.trace_queued(a, vec![7], ProbeRequest::Get);
    let at = g.next_due().expect("asked about now");
    assert_eq!(g.due_probes(at, 8), [(a, ProbeRequest::Get)]);
    assert_eq!(
        g.probe_answered(a, Readiness::Stored, at),
        Released::Go(vec![7])
    );
}
