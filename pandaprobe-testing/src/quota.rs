//! The account's trace quota: the real server counts every accepted `POST /traces` (re-sends
//! included) and refuses the rest of the billing period once a HOBBY plan's quota is used up.

use std::sync::atomic::{AtomicU64, Ordering};

/// The traces a HOBBY plan includes, named in [`Fault::QuotaExceeded`](crate::Fault) when the
/// server has no quota of its own.
pub(crate) const HOBBY_TRACES: u64 = 100;

#[derive(Debug)]
pub(crate) struct Quota {
    limit: Option<u64>,
    used: AtomicU64,
}

impl Quota {
    /// `None`: no quota.
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Quota {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Take one trace from the quota; `false` when it is used up.
    pub(crate) fn take(&self) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < limit).then_some(used + 1)
            })
            .is_ok()
    }

    /// The quota named in refusals.
    pub(crate) fn limit_or_hobby(&self) -> u64 {
        self.limit.unwrap_or(HOBBY_TRACES)
    }
}

/// The real server's refusal (a domain error: `detail`, not `error`).
pub(crate) fn refusal(limit: u64) -> String {
    serde_json::json!({
        "detail": format!(
            "You've reached the traces limit ({limit}) for your HOBBY plan. Please upgrade to continue."
        )
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_to_zero() {
        let quota = Quota::new(Some(2));
        assert!(quota.take());
        assert!(quota.take());
        assert!(!quota.take());
        assert!(!quota.take());
        assert_eq!(quota.limit_or_hobby(), 2);
    }

    #[test]
    fn no_quota_never_refuses() {
        let quota = Quota::new(None);
        assert!((0..1000).all(|_| quota.take()));
        assert_eq!(quota.limit_or_hobby(), HOBBY_TRACES);
        assert_eq!(
            refusal(3),
            r#"{"detail":"You've reached the traces limit (3) for your HOBBY plan. Please upgrade to continue."}"#
        );
    }
}
