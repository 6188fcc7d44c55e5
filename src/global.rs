//! The process-wide client, like the Python SDK's module functions: `init` once at the top of
//! `main`, keep the guard, and score from anywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use crate::client::Client;
use crate::error::{FlushError, ScoreError};
use crate::score::Score;
use crate::trace::{Trace, TraceBuilder};

static GLOBAL: RwLock<Option<Client>> = RwLock::new(None);
static WARNED_UNSET: AtomicBool = AtomicBool::new(false);

/// The global client, cloned out so that no lock is held while it works; with none, warns
/// once that `what` records nothing.
fn current(what: &str) -> Option<Client> {
    let client = GLOBAL
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    if client.is_none() && !WARNED_UNSET.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "pandaprobe",
            "pandaprobe::{what} called before pandaprobe::init: nothing is recorded or sent \
             (warned once)"
        );
    }
    client
}

/// Makes `client` the global client and returns a guard that shuts it down when dropped,
/// delivering what is queued within the client's shutdown timeout. Statics are never dropped
/// at process exit, so keep the guard alive in `main`: `let _guard = pandaprobe::init(client);`
///
/// A client set earlier is replaced (and shut down once its last handle is gone).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let _guard = pandaprobe::init(pandaprobe::Client::builder().enabled(false).build()?);
/// let trace = pandaprobe::start_trace("my-agent");
/// pandaprobe::score(pandaprobe::Score::numeric(trace.trace_id(), "relevance", 0.9))?;
/// trace.end();
/// pandaprobe::flush(std::time::Duration::from_secs(5))?;
/// # Ok(()) }
/// ```
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
    GLOBAL
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Shuts the global client down when dropped; see [`init`].
#[derive(Debug)]
#[must_use = "dropping the guard shuts the global client down at once"]
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

/// [`Client::score`] on the global client. With none, a no-op that warns once.
///
/// # Errors
///
/// As [`Client::score`].
pub fn score(score: Score) -> Result<(), ScoreError> {
    match current("score") {
        Some(client) => client.score(score),
        None => Ok(()),
    }
}

/// [`Client::flush`] on the global client; `Ok` (and a warning, once) with none.
///
/// # Errors
///
/// As [`Client::flush`].
pub fn flush(timeout: Duration) -> Result<(), FlushError> {
    match current("flush") {
        Some(client) => client.flush(timeout),
        None => Ok(()),
    }
}

/// [`Client::flush_async`] on the global client; `Ok` (and a warning, once) with none.
///
/// # Errors
///
/// As [`Client::flush`].
pub async fn flush_async(timeout: Duration) -> Result<(), FlushError> {
    match current("flush_async") {
        Some(client) => client.flush_async(timeout).await,
        None => Ok(()),
    }
}

/// [`Client::shutdown`] on the global client; `Ok` (and a warning, once) with none.
///
/// # Errors
///
/// As [`Client::shutdown`].
pub fn shutdown(timeout: Duration) -> Result<(), FlushError> {
    match current("shutdown") {
        Some(client) => client.shutdown(timeout),
        None => Ok(()),
    }
}

/// [`Client::shutdown_async`] on the global client; `Ok` (and a warning, once) with none.
///
/// # Errors
///
/// As [`Client::shutdown`].
pub async fn shutdown_async(timeout: Duration) -> Result<(), FlushError> {
    match current("shutdown_async") {
        Some(client) => client.shutdown_async(timeout).await,
        None => Ok(()),
    }
}

/// [`Client::start_trace`] on the global client; with none, a trace that records nothing (its
/// id is still a fresh UUID) and a warning, once.
pub fn start_trace(name: impl Into<String>) -> Trace {
    trace(name).start()
}

/// [`Client::trace`] on the global client; see [`start_trace`].
pub fn trace(name: impl Into<String>) -> TraceBuilder {
    current("trace")
        .unwrap_or_else(Client::disabled)
        .trace(name)
}
