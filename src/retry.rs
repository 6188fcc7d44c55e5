//! The one place that decides what an attempt's result means: delivered, retry (and how), or
//! rejected for good. Pure functions, unit-tested below.

use std::time::{Duration, SystemTime};

/// What one HTTP attempt produced, as the transport saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The server answered.
    Answered {
        status: u16,
        /// `Retry-After`, already converted to a wait (uncapped).
        retry_after: Option<Duration>,
        /// The start of the answer's body, for the logs.
        message: String,
    },
    /// No answer. `ambiguous` when the request may have reached the server (a timeout or a
    /// broken connection after sending), so a retry may store the record twice.
    Failed { ambiguous: bool, message: String },
}

/// What the worker does next with the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Delivered,
    Retry(RetryHint),
    /// Retrying cannot help (401, 403, 404, 422, …): drop and count as rejected.
    Reject,
}

/// How to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryHint {
    /// The server's `Retry-After`, if it gave one.
    pub(crate) after: Option<Duration>,
    /// A 429: pause the whole endpoint rather than retrying records one by one.
    pub(crate) pause_endpoint: bool,
    /// The server closes the connection after a 500: retry on a fresh one.
    pub(crate) fresh_connection: bool,
    /// The failed attempt may have stored the record: the retry may make a duplicate.
    pub(crate) ambiguous: bool,
}

/// Retryable: connection errors, timeouts, 408, 429, 500, 502, 503, 504. Every other status is
/// final: 2xx delivered, anything else rejected (redirects are not followed).
pub(crate) fn decide(attempt: &Attempt) -> Decision {
    match attempt {
        Attempt::Answered { status, .. } if (200..300).contains(status) => Decision::Delivered,
        Attempt::Answered {
            status: status @ (408 | 429 | 500 | 502 | 503 | 504),
            retry_after,
            ..
        } => Decision::Retry(RetryHint {
            after: *retry_after,
            pause_endpoint: *status == 429,
            fresh_connection: *status == 500,
            ambiguous: false,
        }),
        Attempt::Answered { .. } => Decision::Reject,
        Attempt::Failed { ambiguous, .. } => Decision::Retry(RetryHint {
            after: None,
            pause_endpoint: false,
            fresh_connection: true,
            ambiguous: *ambiguous,
        }),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (a date in the past means now).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: None,
            message: String::new(),
        }
    }

    #[test]
    fn success_is_delivered() {
        assert_eq!(decide(&answered(201)), Decision::Delivered);
        assert_eq!(decide(&answered(202)), Decision::Delivered);
    }

    #[test]
    fn transient_statuses_are_retried() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(decide(&answered(status)), Decision::Retry(_)),
                "{status}"
            );
        }
        assert!(matches!(
            decide(&answered(429)),
            Decision::Retry(RetryHint {
                pause_endpoint: true,
                ..
            })
        ));
        assert!(matches!(
            decide(&answered(500)),
            Decision::Retry(RetryHint {
                fresh_connection: true,
                ..
            })
        ));
    }

    #[test]
    fn final_statuses_are_rejected() {
        for status in [301, 400, 401, 403, 404, 409, 413, 422, 501, 505] {
            assert_eq!(decide(&answered(status)), Decision::Reject, "{status}");
        }
    }

    #[test]
    fn failures_are_retried_and_marked_ambiguous_when_they_may_have_landed() {
        let d = decide(&Attempt::Failed {
            ambiguous: true,
            message: "timeout".into(),
        });
        assert!(matches!(
            d,
            Decision::Retry(RetryHint {
                ambiguous: true,
                ..
            })
        ));
        let d = decide(&Attempt::Failed {
            ambiguous: false,
            message: "refused".into(),
        });
        assert!(matches!(
            d,
            Decision::Retry(RetryHint {
                ambiguous: false,
                ..
            })
        ));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 86400 ", now),
            Some(Duration::from_secs(86400))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
