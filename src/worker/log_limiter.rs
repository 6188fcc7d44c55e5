//! Logs a repeated warning at most once per interval, with how many it stood for: a dead server
//! must not turn into a log line per record.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) struct LogLimiter {
    interval: Duration,
    /// When each kind of line was last logged, and how many were held back since.
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: HashMap::new(),
        }
    }

    /// `Some(n)`: log now, and say the line also stands for `n` held back since the last one.
    /// `None`: stay quiet (this one is counted for the next line).
    pub(crate) fn admit(&mut self, key: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            // `checked_duration_since`: an instant from before the last line (never expected)
            // must not underflow.
            Some((logged, held_back))
                if now
                    .checked_duration_since(*logged)
                    .is_none_or(|d| d < self.interval) =>
            {
                *held_back += 1;
                None
            }
            Some(entry) => {
                let held_back = entry.1;
                *entry = (now, 0);
                Some(held_back)
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_per_key_with_the_count_held_back() {
        let interval = Duration::from_secs(10);
        let mut limiter = LogLimiter::new(interval);
        let t0 = Instant::now();
        assert_eq!(limiter.admit("rejected", t0), Some(0));
        assert_eq!(limiter.admit("rejected", t0), None);
        assert_eq!(limiter.admit("rejected", t0 + interval / 2), None);
        assert_eq!(limiter.admit("exhausted", t0), Some(0), "keys are apart");
        assert_eq!(limiter.admit("rejected", t0 + interval), Some(2));
        assert_eq!(limiter.admit("rejected", t0 + interval), None);
    }
}
