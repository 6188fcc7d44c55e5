//! The builder: its fields and defaults, and the setters of who the client is (key, project,
//! endpoint, environment), whether it runs, and what it does with losses. How records travel is
//! set in `tuning`, how the server is reached in `connection`.

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
    pub(super) fn overridden(mut self, env: &str) -> Self {
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
