//! The one place that decides what an attempt's result means for its record: delivered,
//! dropped (and why), retried (and when), or held back by the rate limit.
//! The only file that names the `backoff` crate, so that it can be replaced here alone.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::time::Instant;

use super::transport::Attempt;
use crate::config::Config;
use crate::drop_event::DropReason;

/// What the worker does next with the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered,
    Drop(DropReason),
    /// Send it again at this time (on a fresh connection if the state says so).
    RetryAt {
        at: Instant,
        ambiguous: bool,
    },
    /// A 429 of the rate limiter: the endpoint's window decides when (see `rate_window`).
    RateLimited {
        retry_after: Option<Duration>,
    },
}

/// A record's retry state, carried with it.
#[derive(Default)]
pub(crate) struct RetryState {
    attempts: u32,
    /// Retries after a backoff: the ones `max_retries` bounds.
    backoff_retries: u32,
    first_failure: Option<Instant>,
    backoff: Option<Box<ExponentialBackoff>>,
    fresh_connection: bool,
}

impl RetryState {
    /// Attempts made so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the next attempt must open a new connection.
    pub(crate) fn fresh_connection(&self) -> bool {
        self.fresh_connection
    }
}

/// The budget and the waits: retry connection errors, timeouts, 408, 429, 500, 502, 503 and
/// 504; every other status is final (2xx delivered, anything else rejected; redirects are not
/// followed).
pub(crate) struct RetryPolicy {
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_elapsed: Duration,
    max_retry_after: Duration,
}

impl RetryPolicy {
    pub(crate) fn new(config: &Config) -> RetryPolicy {
        RetryPolicy {
            max_retries: config.max_retries,
            initial_backoff: config.retry_initial_backoff,
            max_backoff: config.retry_max_backoff,
            max_elapsed: config.retry_max_elapsed,
            max_retry_after: config.max_retry_after,
        }
    }

    /// Decides what `attempt` means for a record in `state`, and updates the state.
    /// `spans`: the record adds spans to a trace, and a 404 means its trace is not stored
    /// (yet): retried like a 500, not final.
    pub(crate) fn decide(
        &self,
        state: &mut RetryState,
        attempt: &Attempt,
        spans: bool,
        now: Instant,
    ) -> Verdict {
        state.attempts += 1;
        let (status, retry_after, detail) = match attempt {
            Attempt::Answered {
                status,
                retry_after,
                detail,
                ..
            } => (Some(*status), *retry_after, *detail),
            Attempt::Failed { .. } => (None, None, false),
        };
        match status {
            Some(200..=299) => return Verdict::Delivered,
            // The account's quota, not the rate limiter: nothing helps before it resets.
            Some(429) if detail => return Verdict::Drop(DropReason::QuotaExceeded),
            Some(408 | 429 | 500 | 502 | 503 | 504) | None => {}
            Some(404) if spans => {}
            Some(_) => return Verdict::Drop(DropReason::Rejected),
        }
        let first_failure = *state.first_failure.get_or_insert(now);
        if now.saturating_duration_since(first_failure) >= self.max_elapsed {
            return Verdict::Drop(DropReason::RetriesExhausted);
        }
        // The server closes the connection after a 500 (without saying so), and a broken
        // connection is broken: the retry must not reuse a pooled socket.
        state.fresh_connection |= matches!(status, Some(500) | None);
        if status == Some(429) {
            // "Not now", not "failed": bounded by the retry time, not the count.
            return Verdict::RateLimited { retry_after };
        }
        if state.backoff_retries >= self.max_retries {
            return Verdict::Drop(DropReason::RetriesExhausted);
        }
        state.backoff_retries += 1;
        let backoff = state.backoff.get_or_insert_with(|| {
            Box::new(ExponentialBackoff {
                current_interval: self.initial_backoff,
                initial_interval: self.initial_backoff,
                randomization_factor: 0.5,
                multiplier: 2.0,
                max_interval: self.max_backoff,
                max_elapsed_time: None,
                ..ExponentialBackoff::default()
            })
        });
        let wait = match retry_after {
            Some(server_says) => server_says.min(self.max_retry_after),
            None => backoff.next_backoff().unwrap_or(self.max_backoff),
        };
        let ambiguous = matches!(
            attempt,
            Attempt::Failed {
                ambiguous: true,
                ..
            }
        );
        Verdict::RetryAt {
            at: now + wait,
            ambiguous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(10),
        }
    }

    fn answered(status: u16) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: None,
            message: String::new(),
            detail: false,
        }
    }

    fn decide(p: &RetryPolicy, attempt: &Attempt, now: Instant) -> Verdict {
        p.decide(&mut RetryState::default(), attempt, false, now)
    }

    #[test]
    fn success_is_delivered_and_final_statuses_are_rejected() {
        let (p, now) = (policy(3), Instant::now());
        for status in [200, 201, 202, 299] {
            assert_eq!(decide(&p, &answered(status), now), Verdict::Delivered);
        }
        for status in [301, 400, 401, 403, 404, 409, 413, 422, 501, 505] {
            assert_eq!(
                decide(&p, &answered(status), now),
                Verdict::Drop(DropReason::Rejected),
                "{status}"
            );
        }
    }

    #[test]
    fn transient_statuses_back_off_within_bounds() {
        let (p, now) = (policy(3), Instant::now());
        for status in [408, 500, 502, 503, 504] {
            let Verdict::RetryAt { at, ambiguous } = decide(&p, &answered(status), now) else {
                panic!("{status} is retried");
            };
            let wait = at - now;
            assert!(!ambiguous);
            assert!(wait >= Duration::from_millis(50) && wait <= Duration::from_millis(150));
        }
    }

    #[test]
    fn a_429_is_the_rate_limiters_unless_its_body_is_a_quota() {
        let (p, now) = (policy(3), Instant::now());
        assert_eq!(
            decide(&p, &answered(429), now),
            Verdict::RateLimited { retry_after: None }
        );
        let quota = Attempt::Answered {
            status: 429,
            retry_after: None,
            message: "You've reached the traces limit (100)".into(),
            detail: true,
        };
        assert_eq!(
            decide(&p, &quota, now),
            Verdict::Drop(DropReason::QuotaExceeded)
        );
    }

    #[test]
    fn retries_are_counted_and_rate_limits_are_not() {
        let (p, now) = (policy(2), Instant::now());
        let mut state = RetryState::default();
        let e500 = answered(500);
        assert!(matches!(
            p.decide(&mut state, &e500, false, now),
            Verdict::RetryAt { .. }
        ));
        assert!(state.fresh_connection(), "after a 500, a fresh connection");
        for _ in 0..5 {
            assert!(matches!(
                p.decide(&mut state, &answered(429), false, now),
                Verdict::RateLimited { .. }
            ));
        }
        // Six attempts, but only one backoff retry of the budget of 2 is used.
        assert_eq!(state.attempts(), 6);
        assert!(matches!(
            p.decide(&mut state, &e500, false, now),
            Verdict::RetryAt { .. }
        ));
        assert_eq!(
            p.decide(&mut state, &e500, false, now),
            Verdict::Drop(DropReason::RetriesExhausted)
        );
    }

    #[test]
    fn a_404_for_added_spans_is_retried_and_final_for_anything_else() {
        let (p, now) = (policy(3), Instant::now());
        let mut state = RetryState::default();
        assert!(matches!(
            p.decide(&mut state, &answered(404), true, now),
            Verdict::RetryAt { .. }
        ));
        assert!(!state.fresh_connection(), "a 404 keeps its connection");
        assert_eq!(
            decide(&p, &answered(404), now),
            Verdict::Drop(DropReason::Rejected)
        );
    }

    #[test]
    fn the_count_and_the_time_budgets_end_retrying() {
        let (p, now) = (policy(2), Instant::now());
        let mut state = RetryState::default();
        let failed = Attempt::Failed {
            ambiguous: true,
            message: "reset".into(),
        };
        for _ in 0..2 {
            assert!(matches!(
                p.decide(&mut state, &failed, false, now),
                Verdict::RetryAt {
                    ambiguous: true,
                    ..
                }
            ));
        }
        assert_eq!(
            p.decide(&mut state, &failed, false, now),
            Verdict::Drop(DropReason::RetriesExhausted)
        );

        let mut state = RetryState::default();
        assert!(matches!(
            p.decide(&mut state, &answered(429), false, now),
            Verdict::RateLimited { .. }
        ));
        let later = now + Duration::from_secs(61);
        assert_eq!(
            p.decide(&mut state, &answered(429), false, later),
            Verdict::Drop(DropReason::RetriesExhausted)
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let (p, now) = (policy(3), Instant::now());
        for (given, expected) in [(2, 2), (86_400, 10)] {
            let attempt = Attempt::Answered {
                status: 503,
                retry_after: Some(Duration::from_secs(given)),
                message: String::new(),
                detail: false,
            };
            let Verdict::RetryAt { at, .. } = decide(&p, &attempt, now) else {
                panic!("503 is retried");
            };
            assert_eq!(at - now, Duration::from_secs(expected));
        }
    }
}
