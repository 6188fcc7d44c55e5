//! Locks that survive a panic elsewhere: a test that panics while holding the server's
//! state must not poison every later request.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
