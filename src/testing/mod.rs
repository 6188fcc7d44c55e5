//! An in-process, PandaProbe-compatible HTTP server for tests, with fault injection.
//!
//! [`TestServer`] listens on `127.0.0.1` (a free port by default) and answers
//! `POST /evaluations/trace-scores` and `POST /traces` the way a real PandaProbe server does:
//! the same checks in the same order, the same status codes and the same bodies, including the
//! awkward parts (a `500` closes the connection; a score whose trace is not stored yet can be
//! refused with `500` when [`TestServerBuilder::require_known_traces`] is on). What it accepted
//! can be read back with [`TestServer::scores`], [`TestServer::traces`] and
//! [`TestServer::requests`].
//!
//! Faults are injected per request with [`TestServer::fail_next`],
//! [`TestServer::fail_next_on`] and [`TestServer::set_responder`]; outages with
//! [`TestServer::stop`] and [`TestServer::restart`].
//!
//! The server runs on its own thread with its own tokio runtime, so it works the same from a
//! plain `#[test]` function, from inside a current-thread runtime and from a multi-thread
//! runtime. Dropping the [`TestServer`] stops it.
//!
//! # Example
//!
//! ```
//! use pandaprobe::testing::TestServer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::start()?;
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//!
//! // Any HTTP client will do; the SDK's own client points at `server.url()`.
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let status = rt.block_on(async {
//!     reqwest::Client::new()
//!         .post(format!("{}/evaluations/trace-scores", server.url()))
//!         .header("X-API-Key", server.api_key())
//!         .header("X-Project-Name", "my-project")
//!         .header("Content-Type", "application/json")
//!         .body(r#"{"trace_id":"29c160fc-44bc-41ad-8bec-fa678ddb1f9a","name":"accuracy","value":"0.85","data_type":"NUMERIC","source":"PROGRAMMATIC"}"#)
//!         .send()
//!         .await
//!         .map(|response| response.status().as_u16())
//! })?;
//! assert_eq!(status, 201);
//!
//! let scores = server.scores();
//! assert_eq!(scores.len(), 1);
//! assert_eq!(scores[0].body["name"], "accuracy");
//! assert_eq!(scores[0].body["value"], "0.85");
//! # Ok(())
//! # }
//! ```
//!
//! # Fault injection
//!
//! For every request the server first looks at the queue filled by
//! [`fail_next`](TestServer::fail_next) / [`fail_next_on`](TestServer::fail_next_on) (the
//! oldest entry that matches the request's path wins), then asks the responder set with
//! [`set_responder`](TestServer::set_responder); a request that neither claims is answered
//! normally. See [`Fault`] for what each fault does on the wire.
//!
//! # Performance
//!
//! Per request the server takes two short mutex locks (three when
//! [`require_known_traces`](TestServerBuilder::require_known_traces) is on) and does no
//! logging. Every request is kept (headers and body) for [`TestServer::requests`], and every
//! stored score and trace for [`TestServer::scores`] / [`TestServer::traces`]: for long
//! benchmarks, turn request recording off with
//! [`record_requests(false)`](TestServerBuilder::record_requests) or call
//! [`TestServer::reset_records`] between runs.
//!
//! # Good to know
//!
//! * Connections the server closes (after a `500`, [`Fault::Reset`],
//!   [`Fault::StoreThenReset`], [`TestServer::stop`], a running server's
//!   [`TestServer::restart`]) may still sit in a client's connection pool; the next request on
//!   such a connection fails once with a connection error, as it would against the real
//!   server. Clients must retry on a fresh connection.
//! * "Reset" means the server closes the socket without answering; the client sees an
//!   incomplete message or a reset, either way an error, never a status.
//! * Stored records, the fault queue and the responder survive `stop`/`restart`. A
//!   [`Fault::Delay`] in progress still stores when its delay ends, even after `stop`.
//! * Body validation follows the real server (PandaProbe backend 0.5.0): every rule of its
//!   ingestion contract, with its status (422, or 500 for what its database refuses). Keys it
//!   does not know are ignored, as the real server does.

mod answers;
mod contract;
mod server;
mod state;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use self::server::{server_thread, Command, ExitSignal};
use self::state::{lock, Faults, Shared, State};

/// The API key a [`TestServer`] accepts unless [`TestServerBuilder::api_key`] sets another.
pub const DEFAULT_API_KEY: &str = "sk_pp_test";

/// The path scores are posted to.
pub const SCORES_PATH: &str = "/evaluations/trace-scores";

/// The path traces are posted to.
pub const TRACES_PATH: &str = "/traces";

/// How long `stop`, `restart`, `start` and `drop` wait for the server thread before giving up.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server does to a request instead of (or before) answering it normally.
///
/// Install faults with [`TestServer::fail_next`], [`TestServer::fail_next_on`] or
/// [`TestServer::set_responder`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and the real server's body for it; nothing is stored.
    ///
    /// * `500`: `text/plain` `Internal Server Error`, then the connection is closed.
    /// * `401`: `{"detail":"Invalid API key"}`; `403`, `404`, `405`, `409`: `{"detail":"..."}`.
    /// * `422`: `{"detail":"Validation error","errors":[{"field":"...","message":"..."}]}`.
    /// * `429`: `{"error":"Rate limit exceeded: 200 per 1 minute"}` (`100` on `/traces`), with
    ///   **no** `Retry-After` header, like the real server.
    /// * `408`, `502`, `503`, `504`: a short `text/plain` body (what a proxy sends).
    /// * anything else: `{"detail":"<reason phrase>"}`.
    ///
    /// A status below 200 or above 999 is answered as `500`.
    Status(u16),
    /// Like [`Fault::Status`] with a `Retry-After` header whose value is passed verbatim
    /// (seconds such as `"2"`, or an HTTP date). A value that is not a valid header value is
    /// left out.
    RetryAfter {
        /// The status to answer with, typically 429 or 503.
        status: u16,
        /// The `Retry-After` header value.
        retry_after: String,
    },
    /// Wait this long, then handle the request normally (and store it). The store happens
    /// even if the client gave up meanwhile, which is how a timed-out client ends up with an
    /// ambiguous failure and, if it retries, a duplicate score.
    Delay(Duration),
    /// Read the request, store nothing, and close the connection without any answer.
    Reset,
    /// Store the record as if answering 201/202, then close the connection without answering:
    /// the ambiguous failure that makes at-least-once delivery store duplicates. A request
    /// that would not have been stored (invalid, unauthorised) is just reset.
    StoreThenReset,
    /// Read the request and never answer. The request ends when the client closes the
    /// connection or the server stops ([`TestServer::stop`] or drop).
    Hang,
    /// Answer with exactly this status, these headers and this body; nothing is stored.
    /// Headers whose name or value is not valid HTTP are left out. `x-request-id` is still
    /// echoed unless `headers` sets it, and a `500` still closes the connection.
    Raw {
        /// The status code (a status below 200 or above 999 is answered as `500`).
        status: u16,
        /// Headers to send, in order.
        headers: Vec<(String, String)>,
        /// The response body.
        body: Bytes,
    },
}

/// A request as the responder set with [`TestServer::set_responder`] sees it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The HTTP method, e.g. `"POST"`.
    pub method: String,
    /// The path without query string, e.g. `"/evaluations/trace-scores"`.
    pub path: String,
    /// Every header, names in lower case, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The raw request body.
    pub body: Bytes,
    /// The request's 0-based arrival order (its position in [`TestServer::requests`]; it
    /// restarts at 0 after [`TestServer::reset_records`]).
    pub index: usize,
}

impl RequestInfo {
    /// The first value of the header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A request the server received, whatever became of it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReceivedRequest {
    /// The HTTP method, e.g. `"POST"`.
    pub method: String,
    /// The path without query string.
    pub path: String,
    /// Every header, names in lower case, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The raw request body.
    pub body: Bytes,
    /// The status answered, or `None` when the request was reset, is hanging, or is still
    /// being handled (e.g. during a [`Fault::Delay`]).
    pub status: Option<u16>,
    /// The fault applied to this request, if any.
    pub fault: Option<Fault>,
}

impl ReceivedRequest {
    /// The first value of the header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The request's `X-Request-ID` header.
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }
}

/// A score or trace the server stored.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredRecord {
    /// The server-generated id of a score; for a trace, its `trace_id` (generated by the
    /// server when the client sent none).
    pub id: Uuid,
    /// The `X-Request-ID` of the request that stored it (for a trace sent more than once, of
    /// the latest one).
    pub request_id: Option<String>,
    /// The JSON body the client sent (for a trace sent more than once, the latest one).
    pub body: Value,
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Configures and starts a [`TestServer`]. Made by [`TestServer::builder`].
#[derive(Clone, Debug)]
pub struct TestServerBuilder {
    api_key: String,
    port: u16,
    bind_later: bool,
    require_known_traces: bool,
    trace_store_delay: Duration,
    worker_threads: usize,
    record_requests: bool,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        TestServerBuilder {
            api_key: DEFAULT_API_KEY.to_owned(),
            port: 0,
            bind_later: false,
            require_known_traces: false,
            trace_store_delay: Duration::ZERO,
            worker_threads: 1,
            record_requests: true,
        }
    }
}

impl TestServerBuilder {
    /// The API key the server accepts; requests with another key, or none, get
    /// `401 {"detail":"Invalid API key"}`. Default: [`DEFAULT_API_KEY`].
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = key.into();
        self
    }

    /// The port to listen on, on `127.0.0.1`. Default: `0` (a free port chosen by the OS).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Reserve the port but do not listen until [`TestServer::restart`] is called, for
    /// "server not up yet" tests. Default: off (listen at once).
    ///
    /// The port is reserved by binding it and letting it go, so another program could in
    /// principle take it before `restart`.
    pub fn bind_later(mut self) -> Self {
        self.bind_later = true;
        self
    }

    /// When `true`, a score whose `trace_id` is not a stored trace gets
    /// `500 Internal Server Error`, the real server's foreign-key failure. Default: `false`
    /// (any well-formed `trace_id` is accepted).
    pub fn require_known_traces(mut self, yes: bool) -> Self {
        self.require_known_traces = yes;
        self
    }

    /// How long after its `202` a trace becomes stored (visible to
    /// [`require_known_traces`](Self::require_known_traces)), like the real server's
    /// asynchronous worker. Default: zero (stored at once).
    pub fn trace_store_delay(mut self, d: Duration) -> Self {
        self.trace_store_delay = d;
        self
    }

    /// Threads of the server's tokio runtime. Default: `1` (a current-thread runtime driven
    /// by the server's own thread); `0` is taken as `1`.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = n.max(1);
        self
    }

    /// Whether every request is kept for [`TestServer::requests`]. Default: `true`. When
    /// `false`, `requests()` is always empty but the counters
    /// ([`TestServer::request_count`], [`TestServer::status_count`]) still count; turn it off
    /// for long benchmarks so memory stays flat.
    pub fn record_requests(mut self, yes: bool) -> Self {
        self.record_requests = yes;
        self
    }

    /// Start the server thread and, unless [`bind_later`](Self::bind_later) is set, listen.
    ///
    /// # Errors
    ///
    /// The port cannot be bound, the runtime or the thread cannot be created.
    pub fn start(self) -> io::Result<TestServer> {
        let mut addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port));
        if self.bind_later {
            // Learn a free port now so that `url()` is known before anything listens.
            addr = std::net::TcpListener::bind(addr)?.local_addr()?;
        }
        let shared = Arc::new(Shared {
            api_key: self.api_key,
            require_known_traces: self.require_known_traces,
            trace_store_delay: self.trace_store_delay,
            record_requests: self.record_requests,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            faults: Mutex::new(Faults::default()),
            faults_armed: AtomicBool::new(false),
        });
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel::<io::Result<SocketAddr>>();
        let (exited_tx, exited_rx) = std_mpsc::channel::<()>();
        let listen_now = !self.bind_later;
        let workers = self.worker_threads;
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("pandaprobe-test-server".to_owned())
            .spawn(move || {
                let _exited = ExitSignal(exited_tx);
                server_thread(
                    workers,
                    thread_shared,
                    command_rx,
                    addr,
                    listen_now,
                    ready_tx,
                );
            })?;
        let bound = match ready_rx.recv_timeout(CONTROL_TIMEOUT) {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the test server thread did not start",
            )),
        };
        let mut server = TestServer {
            shared,
            addr,
            commands,
            control: Mutex::new(()),
            exited: Mutex::new(exited_rx),
            thread: Some(thread),
        };
        // On error, dropping `server` shuts the thread down.
        server.addr = bound?;
        Ok(server)
    }
}

/// A running PandaProbe-compatible server on `127.0.0.1`. See the [module docs](self).
///
/// Dropping it stops the server, closes its connections and joins its thread (waiting at
/// most a few seconds, never hanging).
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    control: Mutex<()>,
    exited: Mutex<std_mpsc::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("api_key", &self.shared.api_key)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Start a server with the defaults: a free port, [`DEFAULT_API_KEY`], no trace checks.
    ///
    /// # Errors
    ///
    /// See [`TestServerBuilder::start`].
    pub fn start() -> io::Result<TestServer> {
        Self::builder().start()
    }

    /// A builder to configure the server before starting it.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// The base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on (or will, after [`restart`](Self::restart)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API key the server accepts.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// The scores stored (answered `201`, or stored by [`Fault::StoreThenReset`] or after a
    /// [`Fault::Delay`]), in the order they were stored.
    pub fn scores(&self) -> Vec<StoredRecord> {
        self.shared.lock_state().scores.clone()
    }

    /// The traces accepted (answered `202`, or stored by [`Fault::StoreThenReset`] or after a
    /// [`Fault::Delay`]), one per `trace_id`, in the order each was first accepted.
    pub fn traces(&self) -> Vec<StoredRecord> {
        self.shared.lock_state().traces.clone()
    }

    /// Every request received, whatever its outcome, in order of arrival. Empty when the
    /// builder's [`record_requests`](TestServerBuilder::record_requests) is off.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.lock_state().requests.clone()
    }

    /// How many scores are stored.
    pub fn score_count(&self) -> usize {
        self.shared.lock_state().scores.len()
    }

    /// How many distinct traces are stored.
    pub fn trace_count(&self) -> usize {
        self.shared.lock_state().traces.len()
    }

    /// How many requests were received (a request counts once its body has been read).
    pub fn request_count(&self) -> usize {
        self.shared.lock_state().arrived
    }

    /// How many requests were answered with `status`.
    pub fn status_count(&self, status: u16) -> usize {
        self.shared
            .lock_state()
            .status_counts
            .get(usize::from(status))
            .copied()
            .unwrap_or(0)
    }

    /// Wait until at least `n` scores are stored; `false` if `timeout` passed first.
    pub fn wait_for_scores(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.scores.len() >= n)
    }

    /// Wait until at least `n` distinct traces are stored; `false` if `timeout` passed first.
    pub fn wait_for_traces(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.traces.len() >= n)
    }

    /// Wait until at least `n` requests were received; `false` if `timeout` passed first.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.arrived >= n)
    }

    /// Wait until at least `n` requests were answered with `status`; `false` if `timeout`
    /// passed first.
    pub fn wait_for_status(&self, status: u16, n: usize, timeout: Duration) -> bool {
        let i = usize::from(status);
        self.shared.wait_until(timeout, |s| {
            s.status_counts.get(i).copied().unwrap_or(0) >= n
        })
    }

    /// The next `n` requests, to any path, get `fault`.
    ///
    /// Entries queue up: `fail_next(2, a); fail_next(1, b)` gives two `a` then one `b`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.shared.queue_fault(None, n, fault);
    }

    /// The next `n` requests to `path` (e.g. [`SCORES_PATH`] or [`TRACES_PATH`]) get `fault`;
    /// requests to other paths are not affected and do not use up the count.
    pub fn fail_next_on(&self, path: &str, n: usize, fault: Fault) {
        self.shared.queue_fault(Some(path.to_owned()), n, fault);
    }

    /// Consult `f` for every request that no [`fail_next`](Self::fail_next) entry claimed;
    /// `None` answers normally. Replaces any earlier responder.
    ///
    /// `f` runs on the server's thread while the request waits, so it should be quick; use
    /// [`RequestInfo::index`], a counter or a clock for windows and chaos.
    pub fn set_responder<F>(&self, f: F)
    where
        F: Fn(&RequestInfo) -> Option<Fault> + Send + Sync + 'static,
    {
        let mut faults = self.shared.lock_faults();
        faults.responder = Some(Arc::new(f));
        self.shared.rearm(&faults);
    }

    /// Empty the fault queue and remove the responder.
    pub fn clear_faults(&self) {
        let mut faults = self.shared.lock_faults();
        faults.queue.clear();
        faults.responder = None;
        self.shared.rearm(&faults);
    }

    /// Stop listening and close every open connection now: new connections are refused,
    /// open ones are closed (a request in flight sees a reset or an incomplete message).
    /// Stored records are kept. Does nothing if the server is not listening.
    ///
    /// A [`Fault::Delay`] in progress still stores its record when its delay ends.
    pub fn stop(&self) {
        let _control = lock(&self.control);
        let (tx, rx) = std_mpsc::channel();
        if self.commands.send(Command::Stop(tx)).is_ok() {
            let _ = rx.recv_timeout(CONTROL_TIMEOUT);
        }
    }

    /// Listen again on the same port (with `SO_REUSEADDR`), keeping every record, the fault
    /// queue and the responder. If the server is listening, this first does what
    /// [`stop`](Self::stop) does. Also starts a server built with
    /// [`bind_later`](TestServerBuilder::bind_later).
    ///
    /// # Errors
    ///
    /// The port cannot be bound (e.g. another program took it), or the server thread is gone.
    pub fn restart(&self) -> io::Result<()> {
        let _control = lock(&self.control);
        let (tx, rx) = std_mpsc::channel();
        self.commands
            .send(Command::Listen(self.addr, tx))
            .map_err(|_| io::Error::other("the test server thread has exited"))?;
        match rx.recv_timeout(CONTROL_TIMEOUT) {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the test server thread did not answer",
            )),
        }
    }

    /// Forget stored scores and traces, received requests and status counts;
    /// [`RequestInfo::index`] starts again at 0. Which traces count as stored for
    /// [`require_known_traces`](TestServerBuilder::require_known_traces) is kept (the
    /// "database" is not wiped), and so are the faults.
    pub fn reset_records(&self) {
        let mut state = self.shared.lock_state();
        let epoch = state.epoch.wrapping_add(1);
        let known_traces = std::mem::take(&mut state.known_traces);
        *state = State {
            epoch,
            known_traces,
            ..State::default()
        };
        drop(state);
        self.shared.changed.notify_all();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        let exited = lock(&self.exited);
        // `Disconnected` also means the thread has finished.
        let finished = !matches!(
            exited.recv_timeout(CONTROL_TIMEOUT),
            Err(std_mpsc::RecvTimeoutError::Timeout)
        );
        drop(exited);
        if let Some(thread) = self.thread.take() {
            if finished {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TestServer>();
        assert_send_sync::<Fault>();
    }
}
