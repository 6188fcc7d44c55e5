//! The rate window's rules on virtual instants.

use super::*;

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const CAP: Duration = Duration::from_secs(60);

fn limited(limit: u32) -> Answer {
    Answer::RateLimited {
        retry_after: None,
        named: Some(RateLimit::new(limit, SECOND)),
    }
}

/// Sends while allowed; returns the send times.
fn burst(w: &mut RateWindow, now: Instant, max: usize) -> Vec<Instant> {
    let mut sent = Vec::new();
    while sent.len() < max && w.may_send(now, sent.len()) {
        w.on_send(now);
        sent.push(now);
    }
    sent
}

#[test]
fn a_429_closes_at_once_and_in_flight_successes_do_not_reopen() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(None, 100 * MS, CAP);
    assert_eq!(burst(&mut w, t0, 8).len(), 2, "nothing known: a slow start");
    w.on_answer(t0 + MS, t0, Answer::Admitted);
    w.on_answer(t0 + 2 * MS, t0, limited(1));
    assert!(!w.may_send(t0 + 2 * MS, 6));
    for _ in 0..6 {
        w.on_answer(t0 + 3 * MS, t0, Answer::Admitted);
        w.on_answer(t0 + 3 * MS, t0, limited(1));
    }
    assert!(!w.may_send(t0 + 3 * MS, 0), "still closed");
    // It opened before the first success's answer, so it has expired a second later.
    assert_eq!(w.wake_at(), Some(t0 + MS + SECOND));
}

#[test]
fn after_the_window_one_probe_opens_the_next_and_the_limit_is_kept_exactly() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(None, 100 * MS, CAP);
    burst(&mut w, t0, 12);
    for _ in 0..10 {
        w.on_answer(t0 + MS, t0, Answer::Admitted);
    }
    w.on_answer(t0 + MS, t0, limited(10));
    w.on_answer(t0 + MS, t0, limited(10));
    let reopen = w.wake_at().expect("closed");
    assert_eq!(reopen, t0 + MS + SECOND);
    assert!(!w.may_send(reopen - MS, 0));
    assert_eq!(burst(&mut w, reopen, 32).len(), 1, "one probe");
    w.on_answer(reopen + MS, reopen, Answer::Admitted);
    let t1 = reopen + MS;
    assert_eq!(burst(&mut w, t1, 32).len(), 9, "the limit, probe included");
    assert_eq!(
        w.wake_at(),
        Some(t1 + SECOND),
        "closed until that window ends"
    );
    // The next window, the same way: no 429 at all.
    let t2 = t1 + SECOND;
    assert_eq!(burst(&mut w, t2, 32).len(), 1);
    w.on_answer(t2 + MS, t2, Answer::Admitted);
    assert_eq!(burst(&mut w, t2 + MS, 32).len(), 9);
}

#[test]
fn a_configured_limit_is_never_exceeded_from_the_start() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(Some(RateLimit::new(3, SECOND)), 100 * MS, CAP);
    assert_eq!(burst(&mut w, t0, 8).len(), 1, "the first request alone");
    w.on_answer(t0 + MS, t0, Answer::Admitted);
    assert_eq!(burst(&mut w, t0 + MS, 8).len(), 2);
    w.on_answer(t0 + 2 * MS, t0, limited(50));
    assert_eq!(
        w.limit,
        Some(RateLimit::new(3, SECOND)),
        "configured wins over what a 429 names"
    );
}

#[test]
fn a_trickle_never_sends_into_the_next_window_by_accident() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(Some(RateLimit::new(100, SECOND)), 100 * MS, CAP);
    assert!(w.may_send(t0, 0));
    w.on_send(t0);
    w.on_answer(t0 + 10 * MS, t0, Answer::Admitted);
    assert!(w.may_send(t0 + 500 * MS, 0));
    // Within twice the round trip of the window's end: wait for the end.
    assert!(!w.may_send(t0 + 990 * MS, 0));
    assert_eq!(w.wake_at(), Some(t0 + 10 * MS + SECOND));
    // After it: a probe opens a new window.
    assert_eq!(burst(&mut w, t0 + 10 * MS + SECOND, 5).len(), 1);
}

#[test]
fn a_probe_that_meets_a_closed_window_waits_a_whole_window() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(None, 100 * MS, CAP);
    burst(&mut w, t0, 1);
    // The very first request met a window others had filled: when it opened is unknown,
    // but it ends within a window.
    w.on_answer(t0 + MS, t0, limited(10));
    let mut at = w.wake_at().expect("closed");
    assert_eq!(at, t0 + MS + SECOND);
    for _ in 0..3 {
        assert_eq!(burst(&mut w, at, 5).len(), 1, "one probe");
        w.on_answer(at, at, limited(10));
        let next = w.wake_at().expect("closed");
        assert_eq!(next - at, SECOND);
        at = next;
    }
}

#[test]
fn before_a_limit_is_known_few_go_at_once_and_more_as_answers_are_admitted() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(None, 100 * MS, CAP);
    assert_eq!(burst(&mut w, t0, 64).len(), SLOW_START as usize);
    for _ in 0..GROW_EVERY {
        w.on_send(t0);
        w.on_answer(t0, t0, Answer::Admitted);
    }
    assert_eq!(burst(&mut w, t0, 64).len(), SLOW_START as usize + 1);
    for _ in 0..GROW_EVERY * 70 {
        w.on_answer(t0, t0, Answer::Admitted);
    }
    assert_eq!(
        burst(&mut w, t0, 64).len(),
        64,
        "an unlimited server: no bound left"
    );
}

#[test]
fn sharing_a_key_sends_the_tail_of_a_window_one_at_a_time() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(None, 100 * MS, CAP);
    burst(&mut w, t0, 40);
    for _ in 0..40 {
        w.on_answer(t0 + MS, t0, Answer::Admitted);
    }
    w.on_answer(t0 + MS, t0, limited(100)); // others took the other 60
    assert_eq!(w.share, Some(40));
    let reopen = w.wake_at().expect("closed");
    burst(&mut w, reopen, 1);
    w.on_answer(reopen + MS, reopen, Answer::Admitted);
    let t1 = reopen + MS;
    assert_eq!(
        burst(&mut w, t1, 64).len(),
        29,
        "full speed up to 3/4 of the share"
    );
    assert!(!w.may_send(t1, 1), "then one in flight at a time");
    assert!(w.may_send(t1, 0));
}

#[test]
fn without_a_named_limit_pauses_double_up_to_the_cap() {
    let t0 = Instant::now();
    let cap = 300 * MS;
    let mut w = RateWindow::new(None, 100 * MS, cap);
    let unnamed = Answer::RateLimited {
        retry_after: None,
        named: None,
    };
    burst(&mut w, t0, 1);
    w.on_answer(t0, t0, unnamed);
    let mut at = t0;
    let mut waits = Vec::new();
    for _ in 0..3 {
        let next = w.wake_at().expect("closed");
        waits.push(next - at);
        at = next;
        burst(&mut w, at, 1);
        w.on_answer(at, at, unnamed);
    }
    assert_eq!(waits, [100 * MS, 200 * MS, 300 * MS]);
}

#[test]
fn retry_after_is_honoured_and_capped() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(None, 100 * MS, 10 * SECOND);
    burst(&mut w, t0, 2);
    let after = |secs| Answer::RateLimited {
        retry_after: Some(Duration::from_secs(secs)),
        named: None,
    };
    w.on_answer(t0, t0, after(2));
    assert_eq!(w.wake_at(), Some(t0 + 2 * SECOND));
    w.on_answer(t0, t0, after(86_400));
    assert_eq!(w.wake_at(), Some(t0 + 10 * SECOND));
}
