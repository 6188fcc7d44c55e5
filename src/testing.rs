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

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

/// The API key a [`TestServer`] accepts unless [`TestServerBuilder::api_key`] sets another.
pub const DEFAULT_API_KEY: &str = "sk_pp_test";

/// The path scores are posted to.
pub const SCORES_PATH: &str = "/evaluations/trace-scores";

/// The path traces are posted to.
pub const TRACES_PATH: &str = "/traces";

/// How long `stop`, `restart`, `start` and `drop` wait for the server thread before giving up.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// The listen backlog: the SDK's benchmark opens many connections at once.
const LISTEN_BACKLOG: u32 = 1024;

/// Longest name and value a score may have before the real server's column overflows (500).
const SCORE_COLUMN_CHARS: usize = 255;

/// Longest trace or span name.
const NAME_MAX_CHARS: usize = 512;

/// Most spans one trace may carry.
const MAX_SPANS: usize = 500;

// ---------------------------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

type Responder = dyn Fn(&RequestInfo) -> Option<Fault> + Send + Sync;

struct Shared {
    api_key: String,
    require_known_traces: bool,
    trace_store_delay: Duration,
    record_requests: bool,
    state: Mutex<State>,
    changed: Condvar,
    faults: Mutex<Faults>,
    /// `true` while the queue is not empty or a responder is set: lets the common case skip
    /// the faults lock.
    faults_armed: AtomicBool,
}

#[derive(Default)]
struct Faults {
    queue: VecDeque<QueuedFault>,
    responder: Option<Arc<Responder>>,
}

struct QueuedFault {
    path: Option<String>,
    remaining: usize,
    fault: Fault,
}

struct State {
    /// Bumped by `reset_records`, so that a request that arrived before a reset does not
    /// update a record of the new epoch.
    epoch: u64,
    arrived: usize,
    requests: Vec<ReceivedRequest>,
    scores: Vec<StoredRecord>,
    traces: Vec<StoredRecord>,
    trace_index: HashMap<Uuid, usize>,
    /// When each trace becomes stored; `None` = never (an overflowing delay).
    known_traces: HashMap<Uuid, Option<Instant>>,
    /// Indexed by status code (100..=999).
    status_counts: Vec<usize>,
}

impl Default for State {
    fn default() -> Self {
        State {
            epoch: 0,
            arrived: 0,
            requests: Vec::new(),
            scores: Vec::new(),
            traces: Vec::new(),
            trace_index: HashMap::new(),
            known_traces: HashMap::new(),
            status_counts: vec![0; 1000],
        }
    }
}

/// Where a request stands in the records: its index within its epoch.
#[derive(Clone, Copy)]
struct Ticket {
    epoch: u64,
    index: usize,
}

/// A record to store when the request completes.
enum Store {
    Score(StoredRecord),
    Trace {
        trace_id: Uuid,
        record: StoredRecord,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn lock_faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    fn rearm(&self, faults: &Faults) {
        let armed = !faults.queue.is_empty() || faults.responder.is_some();
        self.faults_armed.store(armed, Ordering::Release);
    }

    fn queue_fault(&self, path: Option<String>, n: usize, fault: Fault) {
        if n == 0 {
            return;
        }
        let mut faults = self.lock_faults();
        faults.queue.push_back(QueuedFault {
            path,
            remaining: n,
            fault,
        });
        self.rearm(&faults);
    }

    /// The fault for a request: the oldest matching queue entry, else the responder's answer.
    fn pick_fault(&self, path: &str, info: impl FnOnce() -> RequestInfo) -> Option<Fault> {
        if !self.faults_armed.load(Ordering::Acquire) {
            return None;
        }
        let responder = {
            let mut faults = self.lock_faults();
            let matching = faults.queue.iter().position(|q| match &q.path {
                None => true,
                Some(p) => p == path,
            });
            if let Some(pos) = matching {
                let entry = &mut faults.queue[pos];
                entry.remaining = entry.remaining.saturating_sub(1);
                let fault = if entry.remaining == 0 {
                    faults.queue.remove(pos).map(|q| q.fault)
                } else {
                    Some(entry.fault.clone())
                };
                self.rearm(&faults);
                return fault;
            }
            faults.responder.clone()
        };
        // Called without any lock held, so a responder may use the `TestServer` freely.
        responder.and_then(|f| f(&info()))
    }

    /// Count a request in and, when recording, keep it.
    fn arrive(&self, req: &Req) -> Ticket {
        let recorded = self.record_requests.then(|| ReceivedRequest {
            method: req.method.as_str().to_owned(),
            path: req.path.clone(),
            headers: header_vec(&req.headers),
            body: req.body.clone(),
            status: None,
            fault: None,
        });
        let mut state = self.lock_state();
        let ticket = Ticket {
            epoch: state.epoch,
            index: state.arrived,
        };
        state.arrived += 1;
        if let Some(r) = recorded {
            state.requests.push(r);
        }
        drop(state);
        self.changed.notify_all();
        ticket
    }

    /// Record how a request ended and store what it stores.
    fn complete(
        &self,
        ticket: Ticket,
        status: Option<StatusCode>,
        fault: Option<Fault>,
        store: Option<Store>,
    ) {
        let mut state = self.lock_state();
        if state.epoch == ticket.epoch {
            if let Some(status) = status {
                if let Some(count) = state.status_counts.get_mut(usize::from(status.as_u16())) {
                    *count += 1;
                }
            }
            if let Some(r) = state.requests.get_mut(ticket.index) {
                r.status = status.map(|s| s.as_u16());
                r.fault = fault;
            }
        }
        match store {
            None => {}
            Some(Store::Score(record)) => state.scores.push(record),
            Some(Store::Trace { trace_id, record }) => {
                match state.trace_index.get(&trace_id) {
                    Some(&i) => {
                        if let Some(slot) = state.traces.get_mut(i) {
                            *slot = record;
                        }
                    }
                    None => {
                        let i = state.traces.len();
                        state.trace_index.insert(trace_id, i);
                        state.traces.push(record);
                    }
                }
                let visible_at = Instant::now().checked_add(self.trace_store_delay);
                state
                    .known_traces
                    .entry(trace_id)
                    .and_modify(|at| {
                        // An upsert never makes a stored trace unstored again.
                        if at.is_none() || (visible_at.is_some() && visible_at < *at) {
                            *at = visible_at;
                        }
                    })
                    .or_insert(visible_at);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    fn trace_is_stored(&self, trace_id: &Uuid) -> bool {
        match self.lock_state().known_traces.get(trace_id) {
            Some(Some(at)) => Instant::now() >= *at,
            _ => false,
        }
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock_state();
        loop {
            if done(&state) {
                return true;
            }
            let now = Instant::now();
            let remaining = match deadline {
                Some(deadline) if deadline <= now => return false,
                Some(deadline) => deadline - now,
                None => Duration::from_secs(3600),
            };
            state = self
                .changed
                .wait_timeout(state, remaining)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_vec(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The server thread: runtime, control loop, listener, connections
// ---------------------------------------------------------------------------------------------

enum Command {
    /// Stop listening if listening, then listen on this address.
    Listen(SocketAddr, std_mpsc::Sender<io::Result<SocketAddr>>),
    Stop(std_mpsc::Sender<()>),
    Shutdown,
}

/// Tells `Drop for TestServer` that the thread is done, however it ends.
struct ExitSignal(std_mpsc::Sender<()>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn server_thread(
    workers: usize,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    addr: SocketAddr,
    listen_now: bool,
    ready: std_mpsc::Sender<io::Result<SocketAddr>>,
) {
    let runtime = match current_thread_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // Extra workers are threads with a current-thread runtime each; every runtime accepts on
    // its own clone of the listening socket. (The crate's tokio has no multi-thread runtime.)
    let mut pool = WorkerPool {
        handles: vec![runtime.handle().clone()],
        workers: Vec::new(),
    };
    for i in 1..workers {
        match Worker::spawn(i) {
            Ok((worker, handle)) => {
                pool.handles.push(handle);
                pool.workers.push(worker);
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                pool.shutdown();
                return;
            }
        }
    }
    runtime.block_on(control_loop(
        shared,
        commands,
        &pool.handles,
        addr,
        listen_now,
        ready,
    ));
    pool.shutdown();
    // Dropping the runtime cancels whatever is left (delayed requests).
    drop(runtime);
}

fn current_thread_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The runtimes that serve connections: the server thread's own, then one per extra worker.
struct WorkerPool {
    handles: Vec<tokio::runtime::Handle>,
    workers: Vec<Worker>,
}

impl WorkerPool {
    fn shutdown(self) {
        for worker in self.workers {
            worker.shutdown();
        }
    }
}

/// An extra worker thread driving a current-thread runtime until told to stop.
struct Worker {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Worker {
    fn spawn(i: usize) -> io::Result<(Worker, tokio::runtime::Handle)> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("pandaprobe-test-server-{i}"))
            .spawn(move || {
                let runtime = match current_thread_runtime() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("a test server worker thread died"))??;
        Ok((Worker { stop, thread }, handle))
    }

    fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The accept tasks of one listening socket and the switches that end them.
struct Listening {
    acceptors: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Listening {
    async fn shutdown(self) {
        let mut tasks = Vec::with_capacity(self.acceptors.len());
        for (stop, task) in self.acceptors {
            let _ = stop.send(());
            tasks.push(task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

async fn control_loop(
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    runtimes: &[tokio::runtime::Handle],
    addr: SocketAddr,
    listen_now: bool,
    ready: std_mpsc::Sender<io::Result<SocketAddr>>,
) {
    let mut active: Option<Listening> = None;
    let first = if listen_now {
        listen(addr, &shared, runtimes).map(|(listening, bound)| {
            active = Some(listening);
            bound
        })
    } else {
        Ok(addr)
    };
    let failed = first.is_err();
    let _ = ready.send(first);
    if failed {
        return;
    }
    while let Some(command) = commands.recv().await {
        match command {
            Command::Listen(addr, reply) => {
                if let Some(listening) = active.take() {
                    listening.shutdown().await;
                }
                let result = listen(addr, &shared, runtimes).map(|(listening, bound)| {
                    active = Some(listening);
                    bound
                });
                let _ = reply.send(result);
            }
            Command::Stop(reply) => {
                if let Some(listening) = active.take() {
                    listening.shutdown().await;
                }
                let _ = reply.send(());
            }
            Command::Shutdown => break,
        }
    }
    if let Some(listening) = active.take() {
        listening.shutdown().await;
    }
}

/// Bind `addr` (with `SO_REUSEADDR`) and start one accept task per runtime.
fn listen(
    addr: SocketAddr,
    shared: &Arc<Shared>,
    runtimes: &[tokio::runtime::Handle],
) -> io::Result<(Listening, SocketAddr)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    let bound = listener.local_addr()?;
    let mut acceptors = Vec::with_capacity(runtimes.len());
    if let [only] = runtimes {
        let (stop, stopped) = oneshot::channel();
        let task = only.spawn(accept_loop(listener, Arc::clone(shared), stopped));
        acceptors.push((stop, task));
    } else {
        let listener = listener.into_std()?;
        for runtime in runtimes {
            let clone = listener.try_clone()?;
            let (stop, stopped) = oneshot::channel();
            let shared = Arc::clone(shared);
            let task = runtime.spawn(async move {
                // Registers the socket with this runtime's reactor.
                if let Ok(listener) = TcpListener::from_std(clone) {
                    accept_loop(listener, shared, stopped).await;
                }
            });
            acceptors.push((stop, task));
        }
    }
    Ok((Listening { acceptors }, bound))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: let the pressure go down a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting a connection task drops its socket: the client sees the connection close.
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(Arc::clone(&shared), req));
    let _ = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

// ---------------------------------------------------------------------------------------------
// Per request
// ---------------------------------------------------------------------------------------------

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
struct CloseWithoutAnswer;

impl fmt::Display for CloseWithoutAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection closed without an answer (injected fault)")
    }
}

impl std::error::Error for CloseWithoutAnswer {}

/// A request with its body read.
struct Req {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// An answer before it becomes a response; `store` is what answering it stores.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    store: Option<Store>,
}

type HttpResponse = Response<Full<Bytes>>;

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<HttpResponse, CloseWithoutAnswer> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| CloseWithoutAnswer)?
        .to_bytes();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    };
    let request_id = req.headers.get("x-request-id").cloned();
    let ticket = shared.arrive(&req);
    let fault = shared.pick_fault(&req.path, || RequestInfo {
        method: req.method.as_str().to_owned(),
        path: req.path.clone(),
        headers: header_vec(&req.headers),
        body: req.body.clone(),
        index: ticket.index,
    });
    let answer = match &fault {
        None => answer_normally(&shared, &req),
        Some(Fault::Status(status)) => canned(*status, &req.path, None),
        Some(Fault::RetryAfter {
            status,
            retry_after,
        }) => canned(*status, &req.path, Some(retry_after)),
        Some(Fault::Raw {
            status,
            headers,
            body,
        }) => raw(*status, headers, body.clone()),
        Some(Fault::Reset) => {
            shared.complete(ticket, None, fault, None);
            return Err(CloseWithoutAnswer);
        }
        Some(Fault::StoreThenReset) => {
            let answer = answer_normally(&shared, &req);
            let store = answer.status.is_success().then_some(answer.store).flatten();
            shared.complete(ticket, None, fault, store);
            return Err(CloseWithoutAnswer);
        }
        Some(Fault::Hang) => {
            shared.complete(ticket, None, fault, None);
            // Ends when hyper drops this future: client closed, or server stopped.
            let never: Infallible = std::future::pending().await;
            match never {}
        }
        Some(Fault::Delay(delay)) => {
            // The delayed handling runs in its own task so that it stores even when the
            // client gives up and hyper drops this future.
            let delay = *delay;
            let (tx, rx) = oneshot::channel();
            let task_shared = Arc::clone(&shared);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut answer = answer_normally(&task_shared, &req);
                let store = answer.store.take();
                task_shared.complete(ticket, Some(answer.status), fault, store);
                let _ = tx.send(answer);
            });
            return match rx.await {
                Ok(answer) => Ok(into_response(answer, request_id)),
                Err(_) => Err(CloseWithoutAnswer),
            };
        }
    };
    let mut answer = answer;
    let store = answer.store.take();
    shared.complete(ticket, Some(answer.status), fault, store);
    Ok(into_response(answer, request_id))
}

fn into_response(answer: Answer, request_id: Option<HeaderValue>) -> HttpResponse {
    let mut headers = answer.headers;
    if let Some(id) = request_id {
        if !headers.contains_key("x-request-id") {
            headers.insert(HeaderName::from_static("x-request-id"), id);
        }
    }
    if answer.status == StatusCode::INTERNAL_SERVER_ERROR {
        // The real server drops the connection after a 500.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = headers;
    response
}

/// A status the server can send as a final answer.
fn final_status(status: u16) -> StatusCode {
    match StatusCode::from_u16(status) {
        Ok(s) if s.as_u16() >= 200 => s,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Answer {
        status,
        headers,
        body: body.into(),
        store: None,
    }
}

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    answer(
        status,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

fn text_answer(status: StatusCode, body: &'static str) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

fn detail(status: StatusCode, message: &str) -> Answer {
    json_answer(status, &json!({ "detail": message }))
}

fn internal_error() -> Answer {
    text_answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

fn validation_error(errors: &[FieldError]) -> Answer {
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "field": e.field, "message": e.message }))
        .collect();
    json_answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "detail": "Validation error", "errors": errors }),
    )
}

fn validation_error_one(field: &str, message: &str) -> Answer {
    validation_error(&[FieldError::new(field, message)])
}

/// The real server's (or its proxy's) answer for a status, for [`Fault::Status`].
fn canned(status: u16, path: &str, retry_after: Option<&str>) -> Answer {
    let status = final_status(status);
    let mut answer = match status.as_u16() {
        500 => internal_error(),
        401 => detail(status, "Invalid API key"),
        403 => detail(status, "Forbidden"),
        404 => detail(status, "Not Found"),
        405 => detail(status, "Method Not Allowed"),
        409 => detail(status, "Conflict"),
        422 => validation_error_one("body", "Injected validation error"),
        429 => {
            let per_minute = if path == TRACES_PATH { 100 } else { 200 };
            json_answer(
                status,
                &json!({ "error": format!("Rate limit exceeded: {per_minute} per 1 minute") }),
            )
        }
        408 => text_answer(status, "Request Timeout"),
        502 => text_answer(status, "Bad Gateway"),
        503 => text_answer(status, "Service Unavailable"),
        504 => text_answer(status, "Gateway Timeout"),
        _ => detail(status, status.canonical_reason().unwrap_or("Error")),
    };
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        answer.headers.insert(header::RETRY_AFTER, value);
    }
    answer
}

fn raw(status: u16, headers: &[(String, String)], body: Bytes) -> Answer {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    Answer {
        status: final_status(status),
        headers: map,
        body,
        store: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Normal handling: the contract
// ---------------------------------------------------------------------------------------------

enum Route {
    Score,
    Trace,
}

fn answer_normally(shared: &Shared, req: &Req) -> Answer {
    let route = match req.path.as_str() {
        SCORES_PATH => Route::Score,
        TRACES_PATH => Route::Trace,
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    if req.method != Method::POST {
        let mut answer = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        answer
            .headers
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return answer;
    }
    if req.headers.contains_key(header::CONTENT_ENCODING) {
        return detail(
            StatusCode::BAD_REQUEST,
            "Compressed request bodies are not supported",
        );
    }
    let key_ok = req
        .headers
        .get("x-api-key")
        .is_some_and(|k| k.as_bytes() == shared.api_key.as_bytes());
    if !key_ok {
        return detail(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    match req.headers.get("x-project-name") {
        None => return validation_error_one("x-project-name", "Field required"),
        Some(name) => {
            let valid = std::str::from_utf8(name.as_bytes()).is_ok_and(valid_project_name);
            if !valid {
                return validation_error_one(
                    "x-project-name",
                    "Project name must be 1-255 characters of letters, digits, spaces, \
                     '-', '_', '.' or \"'\", starting and ending with a letter or digit",
                );
            }
        }
    }
    if let Some(content_type) = req.headers.get(header::CONTENT_TYPE) {
        if !is_json_content_type(content_type.as_bytes()) {
            return validation_error_one("body", "Input should be a valid dictionary");
        }
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(body) => body,
        Err(_) => return validation_error_one("body", "JSON decode error"),
    };
    let Value::Object(fields) = &body else {
        return validation_error_one("body", "Input should be a valid dictionary");
    };
    let request_id = req
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match route {
        Route::Score => match check_score(fields) {
            Err(errors) => validation_error(&errors),
            Ok(score) => {
                if score.name.chars().count() > SCORE_COLUMN_CHARS
                    || score.value.chars().count() > SCORE_COLUMN_CHARS
                    || (shared.require_known_traces && !shared.trace_is_stored(&score.trace_id))
                {
                    return internal_error();
                }
                let id = Uuid::new_v4();
                let response = json!({
                    "id": id.to_string(),
                    "trace_id": score.trace_id.to_string(),
                    "name": score.name,
                    "value": score.value,
                    "data_type": score.data_type,
                    "source": score.source,
                    "reason": score.reason,
                    "metadata": score.metadata,
                    "created_at": now_rfc3339(),
                });
                let mut answer = json_answer(StatusCode::CREATED, &response);
                answer.store = Some(Store::Score(StoredRecord {
                    id,
                    request_id,
                    body,
                }));
                answer
            }
        },
        Route::Trace => match check_trace(fields) {
            Err(errors) => validation_error(&errors),
            Ok(trace_id) => {
                let trace_id = trace_id.unwrap_or_else(Uuid::new_v4);
                let response = json!({
                    "trace_id": trace_id.to_string(),
                    "task_id": Uuid::new_v4().to_string(),
                });
                let mut answer = json_answer(StatusCode::ACCEPTED, &response);
                answer.store = Some(Store::Trace {
                    trace_id,
                    record: StoredRecord {
                        id: trace_id,
                        request_id,
                        body,
                    },
                });
                answer
            }
        },
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `application/json` or any `application/*+json`, like FastAPI.
fn is_json_content_type(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

fn valid_project_name(name: &str) -> bool {
    let count = name.chars().count();
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '\'');
    (1..=255).contains(&count)
        && name.chars().next().is_some_and(char::is_alphanumeric)
        && name.chars().next_back().is_some_and(char::is_alphanumeric)
        && name.chars().all(allowed)
}

// ---------------------------------------------------------------------------------------------
// Body validation
// ---------------------------------------------------------------------------------------------

struct FieldError {
    field: String,
    message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects every validation error of a body, like pydantic does.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn finish<T>(self, ok: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(self.0)
        }
    }
}

/// A score that passed validation; length and foreign-key checks (500s) come after.
struct Score {
    trace_id: Uuid,
    name: String,
    value: String,
    data_type: &'static str,
    source: &'static str,
    reason: Option<String>,
    metadata: Value,
}

const DATA_TYPES: [&str; 3] = ["NUMERIC", "BOOLEAN", "CATEGORICAL"];
const SCORE_SOURCES: [&str; 2] = ["PROGRAMMATIC", "ANNOTATION"];
const TRACE_STATUSES: [&str; 4] = ["PENDING", "RUNNING", "COMPLETED", "ERROR"];
const SPAN_KINDS: [&str; 7] = [
    "AGENT",
    "TOOL",
    "LLM",
    "RETRIEVER",
    "CHAIN",
    "EMBEDDING",
    "OTHER",
];
const SPAN_STATUSES: [&str; 3] = ["UNSET", "OK", "ERROR"];

fn enum_message(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    format!("Input should be one of {}", quoted.join(", "))
}

/// An enum field: absent gives `default`, anything but one of `allowed` is an error.
fn check_enum(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    allowed: &[&'static str],
    default: &'static str,
) -> Option<&'static str> {
    match fields.get(field) {
        None => Some(default),
        Some(Value::String(s)) => {
            let found = allowed.iter().find(|a| **a == s.as_str()).copied();
            if found.is_none() {
                errors.add(format!("{prefix}{field}"), enum_message(allowed));
            }
            found
        }
        Some(_) => {
            errors.add(format!("{prefix}{field}"), enum_message(allowed));
            None
        }
    }
}

/// A required string with a length range in characters.
fn check_string(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    min: usize,
    max: usize,
) -> Option<String> {
    let name = format!("{prefix}{field}");
    match fields.get(field) {
        None => {
            errors.add(name, "Field required");
            None
        }
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n < min {
                errors.add(name, format!("String should have at least {min} character"));
                None
            } else if n > max {
                errors.add(name, format!("String should have at most {max} characters"));
                None
            } else {
                Some(s.clone())
            }
        }
        Some(_) => {
            errors.add(name, "Input should be a valid string");
            None
        }
    }
}

/// An optional string (`null` allowed) of at most `max` characters.
fn check_optional_string(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    max: usize,
) {
    match fields.get(field) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                errors.add(
                    format!("{prefix}{field}"),
                    format!("String should have at most {max} characters"),
                );
            }
        }
        Some(_) => errors.add(format!("{prefix}{field}"), "Input should be a valid string"),
    }
}

/// An optional object: absent is fine, `null` and anything else that is not an object is not.
fn check_object(errors: &mut Errors, fields: &Map<String, Value>, field: &str, prefix: &str) {
    match fields.get(field) {
        None | Some(Value::Object(_)) => {}
        Some(_) => errors.add(
            format!("{prefix}{field}"),
            "Input should be a valid dictionary",
        ),
    }
}

/// An optional UUID (`null` allowed when `nullable`).
fn check_optional_uuid(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    nullable: bool,
) -> Option<Uuid> {
    match fields.get(field) {
        None => None,
        Some(Value::Null) if nullable => None,
        Some(value) => {
            let parsed = value.as_str().and_then(|s| Uuid::parse_str(s).ok());
            if parsed.is_none() {
                errors.add(format!("{prefix}{field}"), "Input should be a valid UUID");
            }
            parsed
        }
    }
}

/// A timestamp field, required or optional (`null` allowed when optional).
fn check_timestamp(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    required: bool,
) {
    let ok = match fields.get(field) {
        None => {
            if required {
                errors.add(format!("{prefix}{field}"), "Field required");
            }
            return;
        }
        Some(Value::Null) => !required,
        Some(Value::Number(_)) => true,
        Some(Value::String(s)) => looks_like_timestamp(s),
        Some(_) => false,
    };
    if !ok {
        errors.add(
            format!("{prefix}{field}"),
            "Input should be a valid datetime",
        );
    }
}

fn check_score(fields: &Map<String, Value>) -> Result<Score, Vec<FieldError>> {
    let mut errors = Errors::default();
    let trace_id = match fields.get("trace_id") {
        None => {
            errors.add("trace_id", "Field required");
            None
        }
        Some(_) => check_optional_uuid(&mut errors, fields, "trace_id", "", false),
    };
    // Overlong names and values are the database's problem (500), checked later.
    let name = check_string(&mut errors, fields, "name", "", 1, usize::MAX);
    let value = check_string(&mut errors, fields, "value", "", 0, usize::MAX);
    let data_type = check_enum(&mut errors, fields, "data_type", "", &DATA_TYPES, "NUMERIC");
    let source = check_enum(
        &mut errors,
        fields,
        "source",
        "",
        &SCORE_SOURCES,
        "ANNOTATION",
    );
    let reason = match fields.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.add("reason", "Input should be a valid string");
            None
        }
    };
    check_object(&mut errors, fields, "metadata", "");
    if let (Some(value), Some(data_type)) = (&value, data_type) {
        match data_type {
            "NUMERIC" => {
                let in_range = value
                    .trim()
                    .parse::<f64>()
                    .is_ok_and(|v| (0.0..=1.0).contains(&v));
                if !in_range {
                    errors.add(
                        "value",
                        "NUMERIC value must be a number between 0.0 and 1.0",
                    );
                }
            }
            "BOOLEAN" => {
                let v = value.trim();
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                    errors.add("value", "BOOLEAN value must be 'true' or 'false'");
                }
            }
            _ => {}
        }
    }
    let (Some(trace_id), Some(name), Some(value), Some(data_type), Some(source)) =
        (trace_id, name, value, data_type, source)
    else {
        return Err(errors.0);
    };
    let metadata = fields
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    errors.finish(Score {
        trace_id,
        name,
        value,
        data_type,
        source,
        reason,
        metadata,
    })
}

/// Validates a trace; `Ok` carries its `trace_id` when it has one.
fn check_trace(fields: &Map<String, Value>) -> Result<Option<Uuid>, Vec<FieldError>> {
    let mut errors = Errors::default();
    let trace_id = check_optional_uuid(&mut errors, fields, "trace_id", "", true);
    check_string(&mut errors, fields, "name", "", 1, NAME_MAX_CHARS);
    check_timestamp(&mut errors, fields, "started_at", "", true);
    check_timestamp(&mut errors, fields, "ended_at", "", false);
    check_enum(
        &mut errors,
        fields,
        "status",
        "",
        &TRACE_STATUSES,
        "COMPLETED",
    );
    check_object(&mut errors, fields, "metadata", "");
    for field in ["session_id", "user_id", "environment", "release"] {
        check_optional_string(&mut errors, fields, field, "", SCORE_COLUMN_CHARS);
    }
    match fields.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tags)) => {
            for (i, tag) in tags.iter().enumerate() {
                if !tag.is_string() {
                    errors.add(format!("tags[{i}]"), "Input should be a valid string");
                }
            }
        }
        Some(_) => errors.add("tags", "Input should be a valid list"),
    }
    match fields.get("spans") {
        None | Some(Value::Null) => {}
        Some(Value::Array(spans)) => {
            if spans.len() > MAX_SPANS {
                errors.add(
                    "spans",
                    format!("List should have at most {MAX_SPANS} items"),
                );
            } else {
                for (i, span) in spans.iter().enumerate() {
                    check_span(&mut errors, span, i);
                }
            }
        }
        Some(_) => errors.add("spans", "Input should be a valid list"),
    }
    errors.finish(trace_id)
}

fn check_span(errors: &mut Errors, span: &Value, i: usize) {
    let prefix = format!("spans[{i}].");
    let Value::Object(fields) = span else {
        errors.add(format!("spans[{i}]"), "Input should be a valid dictionary");
        return;
    };
    check_optional_uuid(errors, fields, "span_id", &prefix, false);
    check_optional_uuid(errors, fields, "parent_span_id", &prefix, true);
    check_string(errors, fields, "name", &prefix, 1, NAME_MAX_CHARS);
    check_enum(errors, fields, "kind", &prefix, &SPAN_KINDS, "OTHER");
    check_enum(errors, fields, "status", &prefix, &SPAN_STATUSES, "UNSET");
    check_timestamp(errors, fields, "started_at", &prefix, true);
    check_timestamp(errors, fields, "ended_at", &prefix, false);
    check_timestamp(errors, fields, "completion_start_time", &prefix, false);
    check_optional_string(errors, fields, "model", &prefix, SCORE_COLUMN_CHARS);
    check_optional_string(errors, fields, "error", &prefix, usize::MAX);
    for field in ["metadata", "token_usage", "model_parameters", "cost"] {
        check_object(errors, fields, field, &prefix);
    }
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH[:]MM]`: what pydantic takes for an RFC 3339
/// timestamp (a missing offset is accepted, as pydantic does).
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Option<u32> {
        let digits = b.get(at..at + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
        )
    };
    let is = |at: usize, c: u8| b.get(at) == Some(&c);
    let date_ok = num(0, 4).is_some()
        && is(4, b'-')
        && num(5, 2).is_some_and(|m| (1..=12).contains(&m))
        && is(7, b'-')
        && num(8, 2).is_some_and(|d| (1..=31).contains(&d));
    let time_ok = matches!(b.get(10), Some(b'T' | b't' | b' '))
        && num(11, 2).is_some_and(|h| h <= 23)
        && is(13, b':')
        && num(14, 2).is_some_and(|m| m <= 59);
    if !date_ok || !time_ok {
        return false;
    }
    let mut i = 16;
    if is(i, b':') {
        if num(i + 1, 2).is_none_or(|sec| sec > 59) {
            return false;
        }
        i += 3;
        if is(i, b'.') || is(i, b',') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return false;
            }
        }
    }
    match b.get(i) {
        None => true,
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            let hours = num(i + 1, 2).is_some_and(|h| h <= 23);
            let minutes = match b.len().checked_sub(i + 3) {
                Some(0) => true,
                Some(2) => num(i + 3, 2).is_some_and(|m| m <= 59),
                Some(3) => is(i + 3, b':') && num(i + 4, 2).is_some_and(|m| m <= 59),
                _ => false,
            };
            hours && minutes
        }
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        for ok in [
            "2026-11-29T03:27:52.093623+00:00",
            "2026-11-29T03:27:52Z",
            "2026-11-29t03:27:52z",
            "2026-11-29 03:27:52",
            "2026-11-29T03:27",
            "2026-11-29T03:27:52.1-05:30",
            "2026-11-29T03:27:52+0530",
            "2026-11-29T03:27:52+05",
        ] {
            assert!(looks_like_timestamp(ok), "{ok}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-11-29",
            "2026-13-29T03:27:52Z",
            "2026-11-29T24:00:00Z",
            "2026-11-29T03:27:52.Z",
            "2026-11-29T03:27:52+",
            "2026-11-29T03:27:52+05:3",
            "2026-11-29T03:27:52Zjunk",
            "2026-11-29T03:27:52+05:30:00",
            "2026-11-29T03:27:5",
            "２０２６-11-29T03:27:52Z",
        ] {
            assert!(!looks_like_timestamp(bad), "{bad}");
        }
    }

    #[test]
    fn project_names() {
        for ok in ["a", "my-project", "My Project v1.2", "o'neil_9", "é1"] {
            assert!(valid_project_name(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in ["", " a", "a ", "-a", "a-", "a/b", "a\tb", long.as_str()] {
            assert!(!valid_project_name(bad), "{bad}");
        }
        assert!(valid_project_name(&"a".repeat(255)));
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(is_json_content_type(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
        ] {
            assert!(!is_json_content_type(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn final_statuses() {
        assert_eq!(final_status(0), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(final_status(101), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(final_status(1000), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(final_status(299).as_u16(), 299);
        assert_eq!(final_status(999).as_u16(), 999);
    }

    #[test]
    fn server_handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TestServer>();
        assert_send_sync::<Fault>();
    }
}
