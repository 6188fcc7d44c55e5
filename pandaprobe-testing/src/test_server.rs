//! The handle a test holds: start and stop the server, read what it received and stored,
//! wait for it, and inject faults.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::server::{server_thread, Command, ExitSignal};
use crate::state::{Settings, Shared};
use crate::sync::lock;
use crate::{Fault, ReceivedRequest, RequestInfo, StoredRecord};

/// How long `stop`, `restart`, `start` and `drop` wait for the server thread before giving up.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running PandaProbe-compatible server on `127.0.0.1`. See the [crate docs](crate).
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
            .field("api_key", &self.shared.api_key())
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Start a server with the defaults (like the real server: rate limits, trace workers,
    /// scores need stored traces) on a free port, accepting [`DEFAULT_API_KEY`](crate::DEFAULT_API_KEY).
    ///
    /// # Errors
    ///
    /// See [`TestServerBuilder::start`](crate::TestServerBuilder::start).
    pub fn start() -> io::Result<TestServer> {
        Self::builder().start()
    }

    pub(crate) fn spawn(
        settings: Settings,
        addr: SocketAddr,
        listen_now: bool,
        workers: usize,
    ) -> io::Result<TestServer> {
        let shared = Arc::new(Shared::new(settings));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel::<io::Result<SocketAddr>>();
        let (exited_tx, exited_rx) = std_mpsc::channel::<()>();
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

    /// The base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The address the server listens on (or will, after [`restart`](Self::restart)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API key the server accepts.
    pub fn api_key(&self) -> &str {
        self.shared.api_key()
    }

    /// The scores stored (answered `201`, or stored by [`Fault::StoreThenReset`] or after a
    /// [`Fault::Delay`]), in the order they were stored.
    pub fn scores(&self) -> Vec<StoredRecord> {
        self.shared.scores()
    }

    /// Every trace accepted (answered `202`, or accepted by [`Fault::StoreThenReset`] or
    /// after a [`Fault::Delay`]), one per `trace_id`, in the order each was first accepted,
    /// whether or not the workers have stored it yet: see [`StoredRecord::stored_at`].
    pub fn traces(&self) -> Vec<StoredRecord> {
        self.shared.traces()
    }

    /// Every request received, whatever its outcome, in order of arrival. Empty when the
    /// builder's [`record_requests`](crate::TestServerBuilder::record_requests) is off.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests()
    }

    /// How many scores are stored.
    pub fn score_count(&self) -> usize {
        self.shared.score_count()
    }

    /// How many distinct traces were accepted (stored or not yet).
    pub fn trace_count(&self) -> usize {
        self.shared.trace_count()
    }

    /// How many of the accepted traces ([`traces`](Self::traces)) are stored.
    pub fn stored_trace_count(&self) -> usize {
        self.shared.stored_trace_count()
    }

    /// When the trace was stored, or `None` when it is not stored (yet, or ever: never sent,
    /// still queued, or containing a U+0000 character). This is the server's database, which
    /// [`reset_records`](Self::reset_records) does not wipe.
    pub fn trace_stored_at(&self, trace_id: Uuid) -> Option<Instant> {
        self.shared.trace_stored_at(&trace_id)
    }

    /// The stored trace exactly as `GET /traces/{trace_id}` returns it (its fields, `spans`
    /// with those added by `POST /traces/{trace_id}/spans`, `total_tokens`, `total_cost`),
    /// whatever project it was stored under; `None` when it is not stored (yet). Object
    /// keys are in `serde_json`'s order here; the HTTP body has the real server's. (When a
    /// span's token count is not an integer, `GET` fails with `500`; this still returns the
    /// trace, counting those tokens as 0.)
    pub fn stored_trace(&self, trace_id: Uuid) -> Option<serde_json::Value> {
        self.shared
            .read_trace(&trace_id, None)
            .map(|read| read.doc.to_value())
    }

    /// The stored trace drawn as a tree of its spans ([`trace_tree`](crate::trace_tree)), for a
    /// log line or an example's output; `None` when it is not stored (yet).
    pub fn trace_tree(&self, trace_id: Uuid) -> Option<String> {
        self.stored_trace(trace_id).map(|t| crate::trace_tree(&t))
    }

    /// How many requests were received (a request counts once its body has been read).
    pub fn request_count(&self) -> usize {
        self.shared.request_count()
    }

    /// How many requests were answered with `status` (rate-limited ones: `status_count(429)`).
    pub fn status_count(&self, status: u16) -> usize {
        self.shared.status_count(status)
    }

    /// Wait until at least `n` scores are stored; `false` if `timeout` passed first.
    pub fn wait_for_scores(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_for_scores(n, timeout)
    }

    /// Wait until at least `n` distinct traces are accepted; `false` if `timeout` passed
    /// first. To wait until they are stored, use
    /// [`wait_for_stored_traces`](Self::wait_for_stored_traces).
    pub fn wait_for_traces(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_for_traces(n, timeout)
    }

    /// Wait until at least `n` of the accepted traces are stored
    /// ([`stored_trace_count`](Self::stored_trace_count)); `false` if `timeout` passed first.
    /// Wakes when a queued trace falls due, without polling.
    pub fn wait_for_stored_traces(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_for_stored_traces(n, timeout)
    }

    /// Wait until the trace `trace_id` is stored and return it as
    /// [`stored_trace`](Self::stored_trace) does; `None` if `timeout` passed first. Wakes on
    /// each trace stored, without polling.
    pub fn wait_for_stored_trace(
        &self,
        trace_id: Uuid,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // The count is read before the look, so a trace stored in between wakes the wait.
            let seen = self.stored_trace_count();
            if let Some(trace) = self.stored_trace(trace_id) {
                return Some(trace);
            }
            let left = match deadline {
                Some(deadline) => deadline.checked_duration_since(Instant::now())?,
                None => timeout,
            };
            if !self.wait_for_stored_traces(seen + 1, left) {
                return self.stored_trace(trace_id);
            }
        }
    }

    /// Wait until at least `n` requests were received; `false` if `timeout` passed first.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_for_requests(n, timeout)
    }

    /// Wait until at least `n` requests were answered with `status`; `false` if `timeout`
    /// passed first.
    pub fn wait_for_status(&self, status: u16, n: usize, timeout: Duration) -> bool {
        self.shared.wait_for_status(status, n, timeout)
    }

    /// The next `n` requests, to any path, get `fault`.
    ///
    /// Entries queue up: `fail_next(2, a); fail_next(1, b)` gives two `a` then one `b`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.shared.faults().push(None, n, fault);
    }

    /// The next `n` requests to `path` (e.g. [`SCORES_PATH`](crate::SCORES_PATH) or
    /// [`TRACES_PATH`](crate::TRACES_PATH)) get `fault`; requests to other paths are not
    /// affected and do not use up the count.
    pub fn fail_next_on(&self, path: &str, n: usize, fault: Fault) {
        self.shared.faults().push(Some(path.to_owned()), n, fault);
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
        self.shared.faults().set_responder(Arc::new(f));
    }

    /// Empty the fault queue and remove the responder.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Stop listening and close every open connection now: new connections are refused,
    /// open ones are closed (a request in flight sees a reset or an incomplete message).
    /// Records, stored traces and rate-limit windows are kept. Does nothing if the server is
    /// not listening.
    ///
    /// A [`Fault::Delay`] in progress still stores its record when its delay ends.
    pub fn stop(&self) {
        let _control = lock(&self.control);
        let (tx, rx) = std_mpsc::channel();
        if self.commands.send(Command::Stop(tx)).is_ok() {
            let _ = rx.recv_timeout(CONTROL_TIMEOUT);
        }
    }

    /// Listen again on the same port (with `SO_REUSEADDR`), keeping every record, the stored
    /// traces, the fault queue and the responder. If the server is listening, this first does
    /// what [`stop`](Self::stop) does. Also starts a server built with
    /// [`bind_later`](crate::TestServerBuilder::bind_later).
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

    /// Forget stored scores, accepted traces, received requests and status counts;
    /// [`RequestInfo::index`] starts again at 0. The server's database (which traces are
    /// stored, and the queue of traces waiting for a worker), the quota used, the rate-limit
    /// windows and the faults are kept.
    pub fn reset_records(&self) {
        self.shared.reset_records();
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
