//! The real server's rate limiter: slowapi with the `limits` library's fixed-window strategy,
//! keyed by API key and scoped by the concrete path (slowapi's `key_style="url"`): a template
//! such as `/traces/{trace_id}` gives every trace id its own windows.
//!
//! A window opens at the first request after the previous one expired and lasts `window`; the
//! first `limit` requests in it pass, every further one is refused without extending it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Windows kept per limiter before expired ones are swept out.
const SWEEP_ABOVE: usize = 4096;

/// `limit` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimit {
    limit: u32,
    window: Duration,
}

impl RateLimit {
    /// A window shorter than a millisecond is taken as one millisecond; other windows are
    /// rounded up to whole milliseconds.
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        let millis = window.as_nanos().div_ceil(1_000_000).max(1);
        let window = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
        RateLimit { limit, window }
    }

    /// How the `limits` library prints it: `200 per 1 minute`, `5 per 250 millisecond`.
    /// `millisecond` is this crate's extension for windows that are not whole seconds.
    pub(crate) fn describe(&self) -> String {
        let millis = self.window.as_millis();
        let units = [
            (86_400_000, "day"),
            (3_600_000, "hour"),
            (60_000, "minute"),
            (1_000, "second"),
        ];
        let (n, unit) = units
            .iter()
            .find(|(size, _)| millis.is_multiple_of(*size))
            .map(|(size, unit)| (millis / size, *unit))
            .unwrap_or((millis, "millisecond"));
        format!("{} per {n} {unit}", self.limit)
    }
}

/// One counting window.
#[derive(Clone, Copy, Debug)]
struct Window {
    opened: Instant,
    hits: u32,
}

/// A window's key: the concrete path and the `X-API-Key` value (`None` is the shared bucket
/// of requests without one).
type WindowKey = (Box<str>, Option<Vec<u8>>);

/// The windows of one rate-limited path or path template, one per concrete path and API key.
#[derive(Debug)]
pub(crate) struct PathLimiter {
    path: String,
    limit: RateLimit,
    /// The 429 body, built once.
    refusal: String,
    windows: Mutex<HashMap<WindowKey, Window>>,
}

impl PathLimiter {
    pub(crate) fn new(path: String, limit: RateLimit) -> Self {
        let refusal = serde_json::json!({
            "error": format!("Rate limit exceeded: {}", limit.describe())
        })
        .to_string();
        PathLimiter {
            path,
            limit,
            refusal,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this limiter counts requests to `path`.
    pub(crate) fn covers(&self, path: &str) -> bool {
        crate::trace_paths::matches(&self.path, path)
    }

    /// The JSON body of a refusal.
    pub(crate) fn refusal(&self) -> &str {
        &self.refusal
    }

    /// Count a request to `path` at `now`; `false` when it is over the limit.
    pub(crate) fn admit(&self, path: &str, api_key: Option<&[u8]>, now: Instant) -> bool {
        let mut windows = lock(&self.windows);
        if windows.len() > SWEEP_ABOVE {
            let window = self.limit.window;
            windows.retain(|_, w| !expired(w, window, now));
        }
        let key = (
            Box::from(path),
            api_key.filter(|k| !k.is_empty()).map(<[u8]>::to_vec),
        );
        let window = windows.entry(key).or_insert(Window {
            opened: now,
            hits: 0,
        });
        if expired(window, self.limit.window, now) {
            *window = Window {
                opened: now,
                hits: 0,
            };
        }
        window.hits = window.hits.saturating_add(1);
        window.hits <= self.limit.limit
    }
}

fn expired(window: &Window, length: Duration, now: Instant) -> bool {
    now.checked_duration_since(window.opened)
        .is_some_and(|age| age >= length)
}

/// Every rate-limited path of a server.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    paths: Vec<PathLimiter>,
}

impl RateLimits {
    pub(crate) fn new(limits: &[(String, RateLimit)]) -> Self {
        RateLimits {
            paths: limits
                .iter()
                .map(|(path, limit)| PathLimiter::new(path.clone(), *limit))
                .collect(),
        }
    }

    /// Count a request; the refusal body when it is over its path's limit. A path both
    /// named exactly and matched by a template counts against the exact limit only.
    pub(crate) fn check(&self, path: &str, api_key: Option<&[u8]>, now: Instant) -> Option<&str> {
        let limiter = self
            .paths
            .iter()
            .find(|l| l.path == path)
            .or_else(|| self.paths.iter().find(|l| l.covers(path)))?;
        (!limiter.admit(path, api_key, now)).then(|| limiter.refusal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Option<&[u8]> = Some(b"sk_pp_a");

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn descriptions_follow_the_limits_library() {
        let describe = |limit, window| RateLimit::new(limit, window).describe();
        assert_eq!(describe(200, Duration::from_secs(60)), "200 per 1 minute");
        assert_eq!(describe(100, Duration::from_secs(60)), "100 per 1 minute");
        assert_eq!(describe(5, Duration::from_secs(2)), "5 per 2 second");
        assert_eq!(describe(10, Duration::from_secs(3600)), "10 per 1 hour");
        assert_eq!(describe(3, Duration::from_secs(86_400)), "3 per 1 day");
        assert_eq!(describe(7, Duration::from_secs(90)), "7 per 90 second");
        assert_eq!(describe(5, ms(250)), "5 per 250 millisecond");
        assert_eq!(describe(5, ms(1500)), "5 per 1500 millisecond");
        assert_eq!(describe(1, Duration::ZERO), "1 per 1 millisecond");
        assert_eq!(
            describe(1, Duration::from_micros(1500)),
            "1 per 2 millisecond"
        );
    }

    #[test]
    fn fixed_window_counts_and_does_not_extend() {
        let limiter = PathLimiter::new("/p".into(), RateLimit::new(3, ms(100)));
        let t0 = Instant::now();
        assert!(limiter.admit("/p", KEY, t0));
        assert!(limiter.admit("/p", KEY, t0 + ms(10)));
        assert!(limiter.admit("/p", KEY, t0 + ms(99)));
        // Refused until the window that opened at t0 ends, however many are refused.
        assert!(!limiter.admit("/p", KEY, t0 + ms(99)));
        assert!(!limiter.admit("/p", KEY, t0 + ms(99)));
        // A new window opens at the first request after the old one expired, not at t0+100.
        assert!(limiter.admit("/p", KEY, t0 + ms(150)));
        assert!(limiter.admit("/p", KEY, t0 + ms(200)));
        assert!(limiter.admit("/p", KEY, t0 + ms(249)));
        assert!(!limiter.admit("/p", KEY, t0 + ms(249)));
        assert!(limiter.admit("/p", KEY, t0 + ms(250)));
    }

    #[test]
    fn keys_have_their_own_windows_and_no_key_is_one_bucket() {
        let limiter = PathLimiter::new("/p".into(), RateLimit::new(1, ms(100)));
        let t0 = Instant::now();
        assert!(limiter.admit("/p", KEY, t0));
        assert!(!limiter.admit("/p", KEY, t0));
        assert!(limiter.admit("/p", Some(b"sk_pp_b"), t0));
        assert!(limiter.admit("/p", None, t0));
        assert!(!limiter.admit("/p", None, t0));
        assert!(
            !limiter.admit("/p", Some(b""), t0),
            "an empty key is no key"
        );
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let limiter = PathLimiter::new("/p".into(), RateLimit::new(0, ms(100)));
        assert!(!limiter.admit("/p", KEY, Instant::now()));
    }

    #[test]
    fn an_earlier_instant_does_not_reopen_the_window() {
        let limiter = PathLimiter::new("/p".into(), RateLimit::new(1, ms(100)));
        let t0 = Instant::now() + ms(50);
        assert!(limiter.admit("/p", KEY, t0));
        assert!(!limiter.admit("/p", KEY, t0 - ms(10)));
    }

    #[test]
    fn paths_are_limited_separately() {
        let limits = RateLimits::new(&[
            ("/a".into(), RateLimit::new(1, ms(100))),
            ("/b".into(), RateLimit::new(2, ms(100))),
        ]);
        let t0 = Instant::now();
        assert_eq!(limits.check("/a", KEY, t0), None);
        assert_eq!(
            limits.check("/a", KEY, t0),
            Some(r#"{"error":"Rate limit exceeded: 1 per 100 millisecond"}"#)
        );
        assert_eq!(limits.check("/b", KEY, t0), None);
        assert_eq!(limits.check("/b", KEY, t0), None);
        assert!(limits.check("/b", KEY, t0).is_some());
        assert_eq!(limits.check("/c", KEY, t0), None);
    }

    #[test]
    fn a_template_gives_every_concrete_path_its_own_window() {
        let limits = RateLimits::new(&[
            ("/traces/{trace_id}".into(), RateLimit::new(1, ms(100))),
            (
                "/traces/{trace_id}/spans".into(),
                RateLimit::new(1, ms(100)),
            ),
            ("/traces/special".into(), RateLimit::new(2, ms(100))),
        ]);
        let t0 = Instant::now();
        assert_eq!(limits.check("/traces/a", KEY, t0), None);
        assert!(limits.check("/traces/a", KEY, t0).is_some());
        assert_eq!(limits.check("/traces/b", KEY, t0), None);
        assert_eq!(limits.check("/traces/a/spans", KEY, t0), None);
        assert!(limits.check("/traces/a/spans", KEY, t0).is_some());
        assert_eq!(limits.check("/traces/a", Some(b"sk_pp_b"), t0), None);
        // The exact path wins over the template.
        assert_eq!(limits.check("/traces/special", KEY, t0), None);
        assert_eq!(limits.check("/traces/special", KEY, t0), None);
        assert!(limits.check("/traces/special", KEY, t0).is_some());
        assert!(limits.check("/traces/a", KEY, t0 + ms(99)).is_some());
        assert_eq!(limits.check("/traces/a", KEY, t0 + ms(100)), None);
    }

    #[test]
    fn expired_windows_of_a_template_are_swept() {
        let limiter = PathLimiter::new("/t/{id}".into(), RateLimit::new(1, ms(10)));
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            assert!(limiter.admit(&format!("/t/{i}"), KEY, t0));
        }
        assert!(limiter.admit("/t/x", KEY, t0 + ms(20)));
        assert_eq!(lock(&limiter.windows).len(), 1);
    }

    #[test]
    fn expired_windows_are_swept() {
        let limiter = PathLimiter::new("/p".into(), RateLimit::new(1, ms(10)));
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            assert!(limiter.admit("/p", Some(i.to_string().as_bytes()), t0));
        }
        assert!(limiter.admit("/p", KEY, t0 + ms(20)));
        assert_eq!(lock(&limiter.windows).len(), 1);
    }
}
