//! The builder and its defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::defaults::*;
use super::env::{self, EnvValue};
use super::network::HttpSettings;
use super::settings::{shown_endpoint, Hook, RateLimit};
use crate::capture::Capture;
use crate::drop_event::DropEvent;
use crate::error::ConfigError;

/// Builds a [`Client`](crate::Client). [`Client::builder`](crate::Client::builder) starts from the defaults alone;
/// [`ClientBuilder::from_env`] starts from the `PANDAPROBE_*` environment variables, and
/// setters called afterwards win over them.
///
/// | setter | default | environment variable |
/// |---|---|---|
/// | [`api_key`](Self::api_key) | required when enabled | `PANDAPROBE_API_KEY` |
/// | [`project_name`](Self::project_name) | required when enabled | `PANDAPROBE_PROJECT_NAME` |
/// | [`endpoint`](Self::endpoint) | [`DEFAULT_ENDPOINT`] | `PANDAPROBE_ENDPOINT` |
/// | [`environment`](Self::environment) | none | `PANDAPROBE_ENVIRONMENT` |
/// | [`release`](Self::release) | none | `PANDAPROBE_RELEASE` |
/// | [`enabled`](Self::enabled) | `true` | `PANDAPROBE_ENABLED` |
/// | [`debug`](Self::debug) | `false` | `PANDAPROBE_DEBUG` |
/// | [`batch_size`](Self::batch_size) | [`DEFAULT_BATCH_SIZE`] | `PANDAPROBE_BATCH_SIZE` |
/// | [`flush_interval`](Self::flush_interval) | [`DEFAULT_FLUSH_INTERVAL`] | `PANDAPROBE_FLUSH_INTERVAL` (seconds) |
/// | [`max_queue_size`](Self::max_queue_size) | [`DEFAULT_MAX_QUEUE_SIZE`] | `PANDAPROBE_MAX_QUEUE_SIZE` |
/// | [`max_queue_bytes`](Self::max_queue_bytes) | [`DEFAULT_MAX_QUEUE_BYTES`] | `PANDAPROBE_MAX_QUEUE_BYTES` |
/// | [`max_record_bytes`](Self::max_record_bytes) | [`DEFAULT_MAX_RECORD_BYTES`] | `PANDAPROBE_MAX_RECORD_BYTES` |
/// | [`max_in_flight`](Self::max_in_flight) | [`DEFAULT_MAX_IN_FLIGHT`] | `PANDAPROBE_MAX_IN_FLIGHT` |
/// | [`request_timeout`](Self::request_timeout) | [`DEFAULT_REQUEST_TIMEOUT`] | `PANDAPROBE_REQUEST_TIMEOUT` (seconds) |
/// | [`connect_timeout`](Self::connect_timeout) | [`DEFAULT_CONNECT_TIMEOUT`] | `PANDAPROBE_CONNECT_TIMEOUT` (seconds) |
/// | [`max_retries`](Self::max_retries) | [`DEFAULT_MAX_RETRIES`] | `PANDAPROBE_MAX_RETRIES` |
/// | [`retry_backoff`](Self::retry_backoff) | [`DEFAULT_RETRY_INITIAL_BACKOFF`], [`DEFAULT_RETRY_MAX_BACKOFF`] | none |
/// | [`retry_max_elapsed`](Self::retry_max_elapsed) | [`DEFAULT_RETRY_MAX_ELAPSED`] | none |
/// | [`max_retry_after`](Self::max_retry_after) | [`DEFAULT_MAX_RETRY_AFTER`] | none |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | [`DEFAULT_SHUTDOWN_TIMEOUT`] | `PANDAPROBE_SHUTDOWN_TIMEOUT` (seconds) |
/// | [`queue_full`](Self::queue_full) | [`QueueFullPolicy::DropNew`] | none |
/// | [`scores_rate_limit`](Self::scores_rate_limit), [`traces_rate_limit`](Self::traces_rate_limit) | none: learned from the server's 429s | none |
/// | [`on_drop`](Self::on_drop) | none | none |
/// | [`add_root_certificate`](Self::add_root_certificate), [`proxy`](Self::proxy), [`configure_http`](Self::configure_http) | Mozilla's roots; the `*_PROXY` variables | `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY` |
///
/// Booleans follow the Python SDK: `true`, `1` or `yes` in any case is true, anything else false.
/// Durations longer than a year (`Duration::MAX` included) are taken as a year: "never".
///
/// ```
/// use std::time::Duration;
/// use pandaprobe::{ClientBuilder, QueueFullPolicy};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = ClientBuilder::from_vars([
///         ("PANDAPROBE_API_KEY", "sk_pp_..."),
///         ("PANDAPROBE_PROJECT_NAME", "my-project"),
///         ("PANDAPROBE_BATCH_SIZE", "50"),
///     ])
///     .flush_interval(Duration::from_millis(500)) // setters win over the environment
///     .queue_full(QueueFullPolicy::Block(Duration::from_millis(5)))
///     .scores_rate_limit(200, Duration::from_secs(60)) // the hosted plan's limit
///     .build()?;
/// # drop(client);
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "call .build() to make the client"]
pub struct ClientBuilder {
    pub(super) api_key: Option<ApiKey>,
    pub(super) project_name: Option<String>,
    pub(super) endpoint: String,
    pub(super) environment: Option<String>,
    pub(super) release: Option<String>,
    pub(crate) enabled: bool,
    pub(super) debug: bool,
    pub(super) batch_size: usize,
    pub(super) flush_interval: Duration,
    pub(super) max_queue_size: usize,
    pub(super) max_queue_bytes: usize,
    pub(super) max_record_bytes: usize,
    pub(super) max_in_flight: usize,
    pub(super) request_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) max_retries: u32,
    pub(super) retry_initial_backoff: Duration,
    pub(super) retry_max_backoff: Duration,
    pub(super) retry_max_elapsed: Duration,
    pub(super) max_retry_after: Duration,
    pub(super) shutdown_timeout: Duration,
    pub(super) queue_full: QueueFullPolicy,
    pub(super) scores_rate_limit: Option<RateLimit>,
    pub(super) traces_rate_limit: Option<RateLimit>,
    pub(super) on_drop: Option<Hook>,
    pub(super) capture: Option<Capture>,
    pub(super) root_certificates: Vec<Vec<u8>>,
    pub(super) proxy: Option<String>,
    pub(super) http: Option<HttpSettings>,
    /// Environment values that did not parse, reported by `build()` unless a setter replaced them.
    pub(super) env_errors: Vec<ConfigError>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key)
            .field("project_name", &self.project_name)
            .field("endpoint", &shown_endpoint(&self.endpoint))
            .field("enabled", &self.enabled)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue_size", &self.max_queue_size)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            api_key: None,
            project_name: None,
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            environment: None,
            release: None,
            enabled: true,
            debug: false,
            batch_size: DEFAULT_BATCH_SIZE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_initial_backoff: DEFAULT_RETRY_INITIAL_BACKOFF,
            retry_max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            retry_max_elapsed: DEFAULT_RETRY_MAX_ELAPSED,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            queue_full: QueueFullPolicy::DropNew,
            scores_rate_limit: None,
            traces_rate_limit: None,
            on_drop: None,
            capture: None,
            root_certificates: Vec::new(),
            proxy: None,
            http: None,
            env_errors: Vec::new(),
        }
    }
}

impl ClientBuilder {
    /// A builder with the defaults only; the environment is not read.
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A builder from the `PANDAPROBE_*` environment variables (see the table above); setters
    /// called afterwards override them. Values that do not parse are reported by
    /// [`build`](Self::build), naming the variable.
    pub fn from_env() -> ClientBuilder {
        ClientBuilder::from_vars(std::env::vars())
    }

    /// Like [`from_env`](Self::from_env), but reads the given name/value pairs instead of the
    /// process environment: for tests, or for configuration kept elsewhere.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> ClientBuilder
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut b = ClientBuilder::default();
        for (name, value) in vars {
            b = match env::read(name.as_ref(), value.as_ref()) {
                None => b,
                Some(Ok(value)) => b.apply(value),
                Some(Err(e)) => {
                    b.env_errors.push(e);
                    b
                }
            };
        }
        b
    }

    fn apply(self, value: EnvValue) -> ClientBuilder {
        match value {
            EnvValue::ApiKey(v) => self.api_key(v),
            EnvValue::ProjectName(v) => self.project_name(v),
            EnvValue::Endpoint(v) => self.endpoint(v),
            EnvValue::Environment(v) => self.environment(v),
            EnvValue::Release(v) => self.release(v),
            EnvValue::Enabled(v) => self.enabled(v),
            EnvValue::Debug(v) => self.debug(v),
            EnvValue::BatchSize(v) => self.batch_size(v),
            EnvValue::MaxQueueSize(v) => self.max_queue_size(v),
            EnvValue::MaxQueueBytes(v) => self.max_queue_bytes(v),
            EnvValue::MaxRecordBytes(v) => self.max_record_bytes(v),
            EnvValue::MaxInFlight(v) => self.max_in_flight(v),
            EnvValue::MaxRetries(v) => self.max_retries(v),
            EnvValue::FlushInterval(v) => self.flush_interval(v),
            EnvValue::RequestTimeout(v) => self.request_timeout(v),
            EnvValue::ConnectTimeout(v) => self.connect_timeout(v),
            EnvValue::ShutdownTimeout(v) => self.shutdown_timeout(v),
        }
    }

    /// Forgets an environment parse error once a setter has replaced the value.
    fn overridden(mut self, env: &str) -> Self {
        self.env_errors.retain(|e| match e {
            ConfigError::Invalid { setting, .. } => *setting != env,
            _ => true,
        });
        self
    }

    /// The organisation API key (`sk_pp_…`). Never logged or printed.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey(key.into()));
        self
    }

    /// The project that scores and traces go to; the server creates it on first use.
    pub fn project_name(mut self, name: impl Into<String>) -> Self {
        self.project_name = Some(name.into());
        self
    }

    /// The server's base URL, without a version prefix. Default [`DEFAULT_ENDPOINT`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = url.into();
        self
    }

    /// Sent as each trace's `environment`. Default none.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// Sent as each trace's `release`. Default none.
    pub fn release(mut self, release: impl Into<String>) -> Self {
        self.release = Some(release.into());
        self
    }

    /// `false` makes a client that accepts and discards everything at no cost, starts no
    /// thread and needs no key. Default `true`.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Logs every request's outcome at `INFO` instead of `DEBUG` under target `pandaprobe`.
    /// Default `false`.
    pub fn debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// How many waiting records wake the worker before its interval is up. Default
    /// [`DEFAULT_BATCH_SIZE`]. The server has no batch endpoint: a batch is sent as concurrent
    /// single-record requests, at most [`max_in_flight`](Self::max_in_flight) at once.
    pub fn batch_size(self, size: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_BATCH_SIZE");
        b.batch_size = size;
        b
    }

    /// The longest a record waits before the worker sends it. Default
    /// [`DEFAULT_FLUSH_INTERVAL`]. An idle client wakes once per interval.
    pub fn flush_interval(self, interval: Duration) -> Self {
        let mut b = self.overridden("PANDAPROBE_FLUSH_INTERVAL");
        b.flush_interval = interval;
        b
    }

    /// Capacity of the record queue, in records. Default [`DEFAULT_MAX_QUEUE_SIZE`]. Its slots
    /// are reserved up front (about 120 bytes each); what the records hold is bounded by
    /// [`max_queue_bytes`](Self::max_queue_bytes). Beyond the queue, the worker holds at most
    /// `max(1024, 4 × max_in_flight, 2 × batch_size)` records being sent or waiting for a
    /// retry (never more than `max(max_queue_size, 2 × max_in_flight)`), plus at most
    /// `max_queue_size` scores waiting for their trace to be stored.
    pub fn max_queue_size(self, size: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_QUEUE_SIZE");
        b.max_queue_size = size;
        b
    }

    /// The byte budget: the most memory all the records the SDK holds for delivery may take
    /// together (queued, in the worker's hands, waiting for a retry or for their trace, and
    /// scores made through a trace still open). Default [`DEFAULT_MAX_QUEUE_BYTES`] (128 MiB).
    ///
    /// Each record is charged what it costs in memory (an estimate of its heap: text, JSON
    /// values and their nodes, at least its JSON length, plus 512 bytes of bookkeeping) when
    /// it is handed in, and given back when it reaches its outcome. A record that does not
    /// fit is refused at the call: [`ScoreError::QueueBytesFull`](crate::ScoreError::QueueBytesFull),
    /// counted as [`DropReason::QueueBytesFull`](crate::DropReason::QueueBytesFull).
    pub fn max_queue_bytes(self, bytes: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_QUEUE_BYTES");
        b.max_queue_bytes = bytes;
        b
    }

    /// The size limit of one record: a score, one span, or a trace's own fields. Default
    /// [`DEFAULT_MAX_RECORD_BYTES`] (1,000,000 bytes, as the Langfuse SDK's event limit).
    ///
    /// A record over it is not refused: its largest big field (a score's `reason` or
    /// `metadata`; a span's or trace's `input`, `output` or `metadata`) is replaced by a marker
    /// string, `"[cut by pandaprobe: output was 3145760 bytes; max_record_bytes is 1000000]"`
    /// (`metadata` becomes `{"pandaprobe_cut": "…"}`, since it must stay an object), then the
    /// next largest, until it fits. Each cut is counted in [`Stats::fields_cut`](crate::Stats)
    /// and logged at debug level. A huge tool output costs a marker, not the whole trace.
    pub fn max_record_bytes(self, bytes: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_RECORD_BYTES");
        b.max_record_bytes = bytes;
        b
    }

    /// Bound on concurrent requests. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub fn max_in_flight(self, n: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_IN_FLIGHT");
        b.max_in_flight = n;
        b
    }

    /// Timeout of one request, sending to the end of the answer. Default
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn request_timeout(self, timeout: Duration) -> Self {
        let mut b = self.overridden("PANDAPROBE_REQUEST_TIMEOUT");
        b.request_timeout = timeout;
        b
    }

    /// Timeout for opening a connection. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        let mut b = self.overridden("PANDAPROBE_CONNECT_TIMEOUT");
        b.connect_timeout = timeout;
        b
    }

    /// Retries after a record's first attempt; `0` disables retrying. Rate-limit answers do
    /// not count. Default [`DEFAULT_MAX_RETRIES`].
    pub fn max_retries(self, retries: u32) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_RETRIES");
        b.max_retries = retries;
        b
    }

    /// The first wait between retries and the cap on one wait; waits double with ±50% jitter.
    /// Defaults [`DEFAULT_RETRY_INITIAL_BACKOFF`] and [`DEFAULT_RETRY_MAX_BACKOFF`].
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial_backoff = initial;
        self.retry_max_backoff = max;
        self
    }

    /// The longest one record is retried for, counted from its first failure. Default
    /// [`DEFAULT_RETRY_MAX_ELAPSED`].
    pub fn retry_max_elapsed(mut self, max: Duration) -> Self {
        self.retry_max_elapsed = max;
        self
    }

    /// Cap on a server's `Retry-After` and on any rate-limit pause. Default
    /// [`DEFAULT_MAX_RETRY_AFTER`] (the server's windows last a minute).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// What dropping the last client handle spends on delivering what is queued. Default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        let mut b = self.overridden("PANDAPROBE_SHUTDOWN_TIMEOUT");
        b.shutdown_timeout = timeout;
        b
    }

    /// What `score()` does when the queue is full. Default [`QueueFullPolicy::DropNew`].
    pub fn queue_full(mut self, policy: QueueFullPolicy) -> Self {
        self.queue_full = policy;
        self
    }

    /// Your plan's limit on score requests: at most `limit` per fixed `window` (the hosted
    /// service: 200 a minute). With it, this client never sends into a full window and never
    /// gets a 429 for scores (unless other clients share the key). Default none: the client
    /// learns the limit from the server's first 429, which names it. A `limit` of 0 is taken
    /// as 1.
    pub fn scores_rate_limit(mut self, limit: u32, window: Duration) -> Self {
        self.scores_rate_limit = Some(RateLimit::new(limit, window));
        self
    }

    /// Your plan's limit on trace requests (the hosted service: 100 a minute); see
    /// [`scores_rate_limit`](Self::scores_rate_limit).
    pub fn traces_rate_limit(mut self, limit: u32, window: Duration) -> Self {
        self.traces_rate_limit = Some(RateLimit::new(limit, window));
        self
    }

    /// Calls `hook` once for every record that was queued and then dropped (rejected, retries
    /// exhausted, quota, shutdown, worker failure), with what is known of it: kind, reason,
    /// trace id, name, last HTTP status and the server's message. It runs on the worker
    /// thread, so it should be quick; a panic in it is caught, counted in
    /// [`Stats::hook_panics`](crate::Stats::hook_panics) and logged. A score refused at the call
    /// (`Err` from `score()`) is not passed to it; a trace, which has no error to return, is,
    /// on the thread that ended it, when it cannot be queued. Default none.
    pub fn on_drop(mut self, hook: impl Fn(&DropEvent) + Send + Sync + 'static) -> Self {
        self.on_drop = Some(Hook(Arc::new(hook)));
        self
    }

    /// Also trusts the certificates in `pem` (one or more, PEM): for a self-hosted server behind
    /// a private certificate authority or a TLS-intercepting proxy. The built-in roots (Mozilla's,
    /// through `webpki-roots`; with the `native-roots` feature, the system's too) stay trusted.
    /// Checked by `build()`. May be called more than once.
    pub fn add_root_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// Sends every request through this proxy (`http://`, `https://` or `socks5://` are what
    /// reqwest takes; `http://user:password@host:port` carries credentials, which are never
    /// printed). Without it, the `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
    /// environment variables apply, as in most HTTP clients. Checked by `build()`.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Adjusts the HTTP client the worker sends with, for what the other setters do not cover:
    /// a client certificate (mTLS, [`Identity`](reqwest::Identity)), a fixed address for a
    /// host name ([`resolve`](reqwest::ClientBuilder::resolve)), a local address, headers a
    /// gateway wants. `configure` gets a fresh [`reqwest::ClientBuilder`] (reqwest is
    /// re-exported as [`pandaprobe::reqwest`](crate::reqwest), the version this SDK builds
    /// with); the SDK then sets its own over it: the API key and project headers, the request
    /// and connect timeouts, redirects off (a redirect would carry the key to another host),
    /// HTTP/1.1, the pool size, and the root certificates and proxy set here. It is called on
    /// the worker's thread each time the worker builds a client: twice at the start, and again
    /// when it renews its connection pool after a server closed a connection. If it panics,
    /// `build()` fails with [`ConfigError::Worker`] (and a later renewal keeps the old pool).
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use pandaprobe::Client;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let gateway: SocketAddr = "10.0.0.7:443".parse()?;
    /// let client = Client::builder()
    ///     .api_key("sk_pp_...")
    ///     .project_name("my-project")
    ///     .endpoint("https://pandaprobe.internal")
    ///     .configure_http(move |http| http.resolve("pandaprobe.internal", gateway))
    ///     .build()?;
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    pub fn configure_http(
        mut self,
        configure: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        self.http = Some(HttpSettings(Arc::new(configure)));
        self
    }

    /// Keeps what the client would send in `capture` instead of sending it: for tests of code
    /// that scores and traces, with no server. The whole pipeline runs (checks, queue, worker,
    /// byte budget, traces longer than one request); every request is answered as a server
    /// that stores everything at once would. No API key or project name is needed (given ones
    /// are checked as usual); the endpoint is never contacted. See [`Capture`].
    pub fn capture(mut self, capture: &Capture) -> Self {
        self.capture = Some(capture.clone());
        self
    }
}
