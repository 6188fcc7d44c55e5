//! One endpoint's view of the server's rate limit, so that it is used to the last request.
//!
//! The server limits requests per API key and path in fixed windows: a window opens at the
//! first request after the previous one expired, admits `limit` requests, answers 429 to the
//! rest (without `Retry-After`) and does not extend. Its 429 body names the limit:
//! `Rate limit exceeded: 200 per 1 minute`. So:
//!
//! - a 429 closes the path at once; answers of requests already in flight do not reopen it;
//! - the window can only have opened before the answer to its first success here, so it has
//!   expired by that answer plus the window's length: the path reopens then, with one probe
//!   that opens the next window, and the rest follow once it succeeds;
//! - with the limit known (configured, or learned from the 429), the path sends exactly
//!   `limit` requests per window and never meets a 429 on its own;
//! - when a 429 came before this client reached the limit, others share the key: from then on
//!   the tail of each window is sent one request at a time, so each client wastes about one
//!   request per window instead of a whole burst;
//! - before any limit is known, few requests go at once (a slow start: two, one more every 50
//!   admitted), since every request in flight when the first 429 comes is wasted;
//! - a probe that meets a closed window (others share the key and opened it) waits a whole
//!   window: it then ends for sure, and probing it again and again only wastes requests.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// Requests at once before any limit is known, and how many admitted answers add one more.
const SLOW_START: u32 = 2;
const GROW_EVERY: u32 = 50;

/// Bounds on the round trip kept for the end-of-window guard.
const MIN_RTT: Duration = Duration::from_millis(1);
const MAX_RTT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Requests go (within the known limit).
    Open,
    /// Nothing goes before `until`; then a probe.
    Closed { until: Instant },
    /// One request alone opens a window; the rest wait for its answer.
    Probing { sent: bool },
}

/// How an answer bears on the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The server's limiter let it through, so it counted in the window: a success, or a 500
    /// from the handler (a score whose trace is not stored yet).
    Admitted,
    RateLimited {
        retry_after: Option<Duration>,
        /// The limit the 429's body names, if it does.
        named: Option<RateLimit>,
    },
    /// Anything else, a failure to connect or an answer a proxy may have given (502-504)
    /// included: it says nothing of the window.
    Other,
}

pub(crate) struct RateWindow {
    limit: Option<RateLimit>,
    /// A configured limit is not replaced by what a 429 names.
    configured: bool,
    /// Cap on any pause (`max_retry_after`).
    cap: Duration,
    /// The first pause when nothing is known of the window.
    first_pause: Duration,
    unknown_pause: Duration,
    state: State,
    /// When this client began its current window; answers to requests sent before it
    /// belong to an earlier window.
    began_at: Option<Instant>,
    /// The answer to the window's first success: the server's window opened before it.
    opened_by: Option<Instant>,
    sent: u32,
    admitted: u32,
    /// Successes in the last window a 429 closed before this client reached the limit:
    /// others use the key too.
    share: Option<u32>,
    /// Answers admitted while no limit was known, for the slow start.
    admitted_unknown: u32,
    rtt: Duration,
}

impl RateWindow {
    pub(crate) fn new(configured: Option<RateLimit>, first_pause: Duration, cap: Duration) -> Self {
        RateWindow {
            limit: configured,
            configured: configured.is_some(),
            cap,
            first_pause,
            unknown_pause: first_pause,
            state: State::Open,
            began_at: None,
            opened_by: None,
            sent: 0,
            admitted: 0,
            share: None,
            admitted_unknown: 0,
            rtt: MIN_RTT,
        }
    }

    /// Whether a request may start now, with `in_flight` of this path's requests under way.
    pub(crate) fn may_send(&mut self, now: Instant, in_flight: usize) -> bool {
        match self.state {
            State::Closed { until } if now < until => return false,
            State::Closed { .. } => self.state = State::Probing { sent: false },
            State::Probing { sent } => return !sent,
            State::Open => {}
        }
        if let State::Probing { sent } = self.state {
            return !sent;
        }
        let Some(limit) = self.limit else {
            let allowed = SLOW_START.saturating_add(self.admitted_unknown / GROW_EVERY);
            return in_flight < allowed as usize;
        };
        let Some(opened_by) = self.opened_by else {
            // A known limit and no window yet: the first request opens one, alone.
            if self.sent == 0 {
                self.state = State::Probing { sent: false };
                return true;
            }
            return false;
        };
        let end = opened_by + limit.window;
        if now >= end {
            // The window has expired for sure: the next request opens a new one.
            self.state = State::Probing { sent: false };
            return true;
        }
        // Near the end, a request could land in the next window and throw the count off.
        let guard = self.rtt * 2;
        if self.sent >= limit.limit || now + guard >= end {
            self.state = State::Closed { until: end };
            return false;
        }
        match self.share {
            Some(share) if self.sent >= share.saturating_mul(3) / 4 => in_flight == 0,
            _ => true,
        }
    }

    /// A request starts now.
    pub(crate) fn on_send(&mut self, now: Instant) {
        if self.state == (State::Probing { sent: false }) {
            self.state = State::Probing { sent: true };
            self.new_window(now);
        } else if self.began_at.is_none() {
            self.began_at = Some(now);
        }
        self.sent += 1;
    }

    fn new_window(&mut self, now: Instant) {
        self.began_at = Some(now);
        self.opened_by = None;
        self.sent = 0;
        self.admitted = 0;
    }

    /// A request sent at `sent_at` was answered (or failed) now.
    pub(crate) fn on_answer(&mut self, now: Instant, sent_at: Instant, answer: Answer) {
        if answer != Answer::Other {
            let rtt = now.saturating_duration_since(sent_at);
            self.rtt = (self.rtt * 7 / 8).max(rtt).clamp(MIN_RTT, MAX_RTT);
        }
        if let Answer::RateLimited {
            named: Some(named), ..
        } = answer
        {
            if !self.configured {
                self.limit = Some(named);
            }
        }
        if answer == Answer::Admitted && self.limit.is_none() {
            self.admitted_unknown = self.admitted_unknown.saturating_add(1);
        }
        if self.began_at.is_some_and(|began| sent_at < began) {
            return; // from an earlier window: tells nothing of this one
        }
        match (answer, self.state) {
            (Answer::Admitted, State::Probing { sent: true }) => {
                self.state = State::Open;
                self.opened_by = Some(now);
                self.admitted = 1;
                self.unknown_pause = self.first_pause;
            }
            (Answer::Admitted, _) => {
                self.admitted += 1;
                self.opened_by.get_or_insert(now);
            }
            (Answer::RateLimited { retry_after, .. }, State::Closed { until }) => {
                // The rest of the burst that met the closed window: only a server's explicit
                // word moves the reopening.
                if let Some(wait) = retry_after {
                    let later = now + wait.min(self.cap);
                    self.state = State::Closed {
                        until: until.max(later),
                    };
                }
            }
            (Answer::RateLimited { retry_after, .. }, State::Probing { sent: true }) => {
                let until = now + self.reprobe_wait(retry_after);
                self.state = State::Closed { until };
            }
            (Answer::RateLimited { retry_after, .. }, _) => {
                self.share = match self.limit {
                    Some(limit) if self.admitted < limit.limit => Some(self.admitted),
                    _ => None,
                };
                let until = self.reopening(now, retry_after);
                self.state = State::Closed { until };
            }
            (Answer::Other, State::Probing { sent: true }) => {
                // The probe told nothing: another one may go.
                self.state = State::Probing { sent: false };
            }
            (Answer::Other, _) => {}
        }
    }

    /// When a window that a 429 just closed can have reopened.
    fn reopening(&mut self, now: Instant, retry_after: Option<Duration>) -> Instant {
        if let Some(wait) = retry_after {
            return now + wait.min(self.cap);
        }
        let Some(limit) = self.limit else {
            return now + self.next_unknown_pause();
        };
        let latest = now + limit.window.min(self.cap);
        match self.opened_by {
            Some(opened_by) if opened_by + limit.window > now => {
                (opened_by + limit.window).min(latest)
            }
            // Nothing known of when it opened: look again soon.
            _ => now + self.reprobe_wait(None),
        }
    }

    /// The wait after a probe met a closed window: it opened at most a window ago (others
    /// opened it), so it has ended a window from now.
    fn reprobe_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.cap);
        }
        match self.limit {
            Some(limit) => limit.window.min(self.cap),
            None => self.next_unknown_pause(),
        }
    }

    fn next_unknown_pause(&mut self) -> Duration {
        let pause = self.unknown_pause.min(self.cap);
        self.unknown_pause = (self.unknown_pause * 2).min(self.cap);
        pause
    }

    /// How long a request may go unanswered before it counts as stuck, not as in flight:
    /// four round trips, at least 250 ms.
    pub(crate) fn stuck_after(&self) -> Duration {
        (self.rtt * 4).max(Duration::from_millis(250))
    }

    /// When the path wants to be looked at again, if it is closed.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        match self.state {
            State::Closed { until } => Some(until),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "rate_window_tests.rs"]
mod tests;
