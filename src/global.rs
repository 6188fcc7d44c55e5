//! The process-wide client, like the Python SDK's module functions: `init` once at the top of
//! `main`, keep the guard, and score from anywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::client::Client;
use crate::error::{FlushError, ScoreError};
use crate::score::Score;
use crate::trace::{Trace, TraceBuilder};

static GLOBAL: RwLock<Option<Client>> = RwLock::new(None);
static WARNED_UNSET: AtomicBool = AtomicBool::new(false);

fn read() -> RwLockReadGuard<'static, Option<Client>> {
    GLOBAL
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes `client` the global client and returns a guard that shuts it down when dropped,
/// delivering what is queued within the client's shutdown timeout. Statics are never dropped
/// at process exit, so keep the guard alive in `main`: `let _guard = pandaprobe::init(client);`
///
/// A client set earlier is replaced (and shut down once its last handle is gone).
#[must_use = "dropping the guard shuts the global client down at once"]
pub fn init(client: Client) -> ClientGuard {
    let previous = GLOBAL
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .replace(client.clone());
    drop(previous);
    ClientGuard { client }
}

/// The global client, if [`init`] has set one.
pub fn client() -> Option<Client> {
    read().clone()
}

/// Shuts the global client down when dropped; see [`init`].
#[derive(Debug)]
pub struct ClientGuard {
    client: Client,
}

impl ClientGuard {
    /// The client this guard looks after.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        {
            let mut global = GLOBAL
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if global.as_ref().is_some_and(|c| c.same_as(&self.client)) {
                *global = None;
            }
        }
        let timeout = self.client.shutdown_timeout();
        let _ = self.client.shutdown(timeout);
    }
}

/// [`Client::score`] on the global client. With no global client this is a no-op that warns
/// once.
pub fn score(score: Score) -> Result<(), ScoreError> {
    match &*read() {
        Some(client) => client.score(score),
        None => {
            if !WARNED_UNSET.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "pandaprobe",
                    "pandaprobe::score called before pandaprobe::init: scores are discarded"
                );
            }
            Ok(())
        }
    }
}

/// [`Client::flush`] on the global client; `Ok` with none.
pub fn flush(timeout: Duration) -> Result<(), FlushError> {
    match client() {
        Some(client) => client.flush(timeout),
        None => Ok(()),
    }
}

/// [`Client::shutdown`] on the global client; `Ok` with none.
pub fn shutdown(timeout: Duration) -> Result<(), FlushError> {
    match client() {
        Some(client) => client.shutdown(timeout),
        None => Ok(()),
    }
}

/// [`Client::start_trace`] on the global client; with none, a trace that records nothing
/// (its id is still a fresh UUID).
pub fn start_trace(name: impl Into<String>) -> Trace {
    trace(name).start()
}

/// [`Client::trace`] on the global client.
pub fn trace(name: impl Into<String>) -> TraceBuilder {
    client().unwrap_or_else(Client::disabled).trace(name)
}
