//! The builder and its defaults: a server that behaves like the hosted PandaProbe service.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::endpoints::{HOSTED_SCORES_PER_MINUTE, HOSTED_TRACES_PER_MINUTE};
use crate::rate_limit::RateLimit;
use crate::state::Settings;
use crate::trace_store::StoreTime;
use crate::{
    TestServer, DEFAULT_API_KEY, SCORES_PATH, SPANS_PATH_TEMPLATE, TRACES_PATH, TRACE_PATH_TEMPLATE,
};

/// Requests per minute per API key the backend's default limit allows on each concrete path
/// that has no limit of its own, such as every [`TRACE_PATH_TEMPLATE`] and
/// [`SPANS_PATH_TEMPLATE`] path: the default rate limit of a [`TestServer`] on those.
pub const DEFAULT_PATH_REQUESTS_PER_MINUTE: u32 = 200;

/// Default time `POST /traces/{trace_id}/spans` spends per span before it answers (measured:
/// 0.8-1.2 s for 500 spans).
pub const DEFAULT_SPAN_WRITE_TIME: Duration = Duration::from_millis(2);

/// Default time a trace worker takes per trace, whatever its size (measured: a small trace on
/// an idle server is stored within tens of milliseconds; a backend run on loopback on a 2-core
/// machine took 90-110 ms).
pub const DEFAULT_TRACE_STORE_BASE: Duration = Duration::from_millis(20);

/// Default time a trace worker takes per span (measured: 500 spans take about 6 s).
pub const DEFAULT_TRACE_STORE_PER_SPAN: Duration = Duration::from_millis(12);

/// Default number of trace workers (the real server's one Celery worker with concurrency 2).
pub const DEFAULT_TRACE_STORE_WORKERS: usize = 2;

const ONE_MINUTE: Duration = Duration::from_secs(60);

/// Configures and starts a [`TestServer`]. Made by [`TestServer::builder`].
///
/// The defaults behave like the real server where a client can tell the difference (see the
/// [crate docs](crate#defaults) for the table); [`lenient`](Self::lenient) turns the awkward
/// parts off for tests about something else.
#[derive(Clone, Debug)]
pub struct TestServerBuilder {
    api_key: String,
    port: u16,
    bind_later: bool,
    require_known_traces: bool,
    rate_limits: Vec<(String, RateLimit)>,
    store_time: StoreTime,
    store_workers: usize,
    trace_quota: Option<u64>,
    span_write_time: Duration,
    worker_threads: usize,
    record_requests: bool,
    tls: Option<(String, String)>,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        TestServerBuilder {
            api_key: DEFAULT_API_KEY.to_owned(),
            port: 0,
            bind_later: false,
            require_known_traces: true,
            rate_limits: vec![
                (
                    SCORES_PATH.to_owned(),
                    RateLimit::new(HOSTED_SCORES_PER_MINUTE, ONE_MINUTE),
                ),
                (
                    TRACES_PATH.to_owned(),
                    RateLimit::new(HOSTED_TRACES_PER_MINUTE, ONE_MINUTE),
                ),
                (
                    TRACE_PATH_TEMPLATE.to_owned(),
                    RateLimit::new(DEFAULT_PATH_REQUESTS_PER_MINUTE, ONE_MINUTE),
                ),
                (
                    SPANS_PATH_TEMPLATE.to_owned(),
                    RateLimit::new(DEFAULT_PATH_REQUESTS_PER_MINUTE, ONE_MINUTE),
                ),
            ],
            store_time: StoreTime {
                base: DEFAULT_TRACE_STORE_BASE,
                per_span: DEFAULT_TRACE_STORE_PER_SPAN,
            },
            store_workers: DEFAULT_TRACE_STORE_WORKERS,
            trace_quota: None,
            span_write_time: DEFAULT_SPAN_WRITE_TIME,
            worker_threads: 1,
            record_requests: true,
            tls: None,
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

    /// When `true`, a score whose `trace_id` is not a stored trace (never sent, still queued,
    /// or unstorable) gets `500 Internal Server Error`, the real server's foreign-key failure.
    /// When `false`, any well-formed `trace_id` is accepted. Default: `true`.
    pub fn require_known_traces(mut self, yes: bool) -> Self {
        self.require_known_traces = yes;
        self
    }

    /// Limit requests to `path` to `limit` per fixed `window`, per API key (requests without
    /// a key share one bucket), replacing any earlier limit on `path`. Every request to the
    /// path counts, whatever its method, before authentication and validation; a request over
    /// the limit gets `429 {"error":"Rate limit exceeded: <limit> per <n> <unit>"}` without
    /// `Retry-After`, like the real server.
    ///
    /// `<n> <unit>` is the largest of day, hour, minute, second that divides the window; a
    /// window that is not whole seconds is printed in `millisecond` (an extension for short
    /// test windows; the real server only uses whole units). Windows are rounded up to whole
    /// milliseconds, at least one.
    ///
    /// `path` may be a template, [`TRACE_PATH_TEMPLATE`] or [`SPANS_PATH_TEMPLATE`] (any
    /// `{name}` segment stands for one non-empty segment): then every concrete path it
    /// matches has windows of its own, as the real limiter scopes by concrete path, so each
    /// trace id gets its own `limit`. A path named exactly is counted by its own limit, not
    /// by a template that also matches it.
    ///
    /// Default: [`HOSTED_SCORES_PER_MINUTE`] on [`SCORES_PATH`],
    /// [`HOSTED_TRACES_PER_MINUTE`] on [`TRACES_PATH`], and
    /// [`DEFAULT_PATH_REQUESTS_PER_MINUTE`] on [`TRACE_PATH_TEMPLATE`] and
    /// [`SPANS_PATH_TEMPLATE`], per 60 s.
    pub fn rate_limit(mut self, path: &str, limit: u32, window: Duration) -> Self {
        self.rate_limits.retain(|(p, _)| p != path);
        self.rate_limits
            .push((path.to_owned(), RateLimit::new(limit, window)));
        self
    }

    /// Remove every rate limit, the defaults included.
    pub fn no_rate_limits(mut self) -> Self {
        self.rate_limits.clear();
        self
    }

    /// How long a trace worker takes to store a trace: `base + per_span × spans`. A trace is
    /// answered `202` at once, waits in a first-come-first-served queue for a free worker,
    /// and is stored when its processing ends. Default: [`DEFAULT_TRACE_STORE_BASE`] +
    /// [`DEFAULT_TRACE_STORE_PER_SPAN`] per span, so a small trace on an idle server is
    /// stored within tens of milliseconds and a 500-span trace takes about 6 s, as measured.
    /// Zero for both stores every trace when it is accepted.
    pub fn trace_store_time(mut self, base: Duration, per_span: Duration) -> Self {
        self.store_time = StoreTime { base, per_span };
        self
    }

    /// Shorthand for [`trace_store_time(delay, Duration::ZERO)`](Self::trace_store_time):
    /// every trace takes `delay`, whatever its size (it may wait longer for a free worker).
    pub fn trace_store_delay(self, delay: Duration) -> Self {
        self.trace_store_time(delay, Duration::ZERO)
    }

    /// How many traces are processed at once. Default: [`DEFAULT_TRACE_STORE_WORKERS`];
    /// `0` is taken as `1`.
    pub fn trace_store_workers(mut self, n: usize) -> Self {
        self.store_workers = n.max(1);
        self
    }

    /// After `n` traces have been accepted (re-sends of a trace included, as the real server
    /// counts), every further valid trace gets `429 {"detail":"You've reached the traces
    /// limit (<n>) for your HOBBY plan. Please upgrade to continue."}`. Invalid traces still
    /// get `422` first, as on the real server. Default: no quota.
    pub fn trace_quota(mut self, n: u64) -> Self {
        self.trace_quota = Some(n);
        self
    }

    /// How long `POST /traces/{trace_id}/spans` works per span before it answers `201` (the
    /// spans become visible when it answers; other connections are served meanwhile).
    /// Default: [`DEFAULT_SPAN_WRITE_TIME`], so 500 spans take 1 s, as measured.
    pub fn span_write_time(mut self, per_span: Duration) -> Self {
        self.span_write_time = per_span;
        self
    }

    /// For tests about something else: no rate limits, scores accepted for any trace
    /// ([`require_known_traces(false)`](Self::require_known_traces)), traces stored when
    /// accepted, spans added at once. Settings made after this call still apply.
    pub fn lenient(self) -> Self {
        self.no_rate_limits()
            .require_known_traces(false)
            .trace_store_time(Duration::ZERO, Duration::ZERO)
            .span_write_time(Duration::ZERO)
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
    /// Serves HTTPS with this certificate chain (PEM, the server's certificate first; name it
    /// for `127.0.0.1`) and private key (PEM): for testing a client against a server behind a
    /// private certificate authority. [`TestServer::url`] then starts with `https://`.
    pub fn tls(mut self, cert_chain_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        self.tls = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    /// # Errors
    ///
    /// The port cannot be bound, the runtime or the thread cannot be created, or the TLS
    /// certificate or key cannot be used.
    pub fn start(self) -> io::Result<TestServer> {
        let mut addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port));
        if self.bind_later {
            // Learn a free port now so that `url()` is known before anything listens.
            addr = std::net::TcpListener::bind(addr)?.local_addr()?;
        }
        let tls = match &self.tls {
            Some((chain, key)) => Some(crate::tls::acceptor(chain, key)?),
            None => None,
        };
        let settings = Settings {
            tls,
            api_key: self.api_key,
            require_known_traces: self.require_known_traces,
            record_requests: self.record_requests,
            rate_limits: self.rate_limits,
            store_time: self.store_time,
            store_workers: self.store_workers,
            trace_quota: self.trace_quota,
            span_write_time: self.span_write_time,
        };
        TestServer::spawn(settings, addr, !self.bind_later, self.worker_threads)
    }
}

impl TestServer {
    /// A builder to configure the server before starting it.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }
}
