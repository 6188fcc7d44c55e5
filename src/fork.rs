//! Noticing that the process was forked. A child of `fork()` (a prefork server, a daemon, a
//! test harness) inherits the client's memory but not its worker thread: records it handed
//! in would be accepted and then wait forever. So a client made before a fork refuses, in the
//! child, every record ([`ScoreError::Forked`](crate::ScoreError::Forked)) and every flush
//! ([`FlushError::Forked`](crate::FlushError::Forked)), at once; the child makes a client of
//! its own, which works as anywhere.
//!
//! The check is one relaxed atomic load: a handler registered with `pthread_atfork` counts the
//! forks in the child, and each client remembers the count it was made under.

use std::sync::atomic::{AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);

#[cfg(unix)]
extern "C" fn in_child() {
    // Async-signal-safe: an atomic add, nothing else.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The process's fork generation, with the handler registered on first use.
pub(crate) fn generation() -> u64 {
    #[cfg(unix)]
    {
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        REGISTERED.call_once(|| {
            // SAFETY: `in_child` is a plain `extern "C"` function that only touches an atomic,
            // which is allowed in a forked child; registering it has no other precondition.
            unsafe {
                libc::pthread_atfork(None, None, Some(in_child));
            }
        });
    }
    FORKS.load(Ordering::Relaxed)
}

/// Whether the process forked since `generation` was read, in this process as a child.
#[inline]
pub(crate) fn forked_since(generation: u64) -> bool {
    FORKS.load(Ordering::Relaxed) != generation
}
