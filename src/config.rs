//! The builder, its defaults and the `PANDAPROBE_*` environment variables.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Url;

use crate::client::Client;
use crate::error::ConfigError;

/// Default base URL of the hosted PandaProbe API.
pub const DEFAULT_ENDPOINT: &str = "https://api.pandaprobe.com";
/// Default number of waiting records that wakes the worker at once.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Default longest time a record waits in the queue before the worker looks at it.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default capacity of the record queue.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 10_000;
/// Default bound on requests in flight at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;
/// Default timeout of one HTTP request, from sending to the end of the answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout for opening a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of retries after the first attempt of one record.
pub const DEFAULT_MAX_RETRIES: u32 = 8;
/// Default wait before the first retry (doubling, with jitter).
pub const DEFAULT_RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Default cap on one wait between retries.
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Default longest time one record is retried for, from its first attempt.
pub const DEFAULT_RETRY_MAX_ELAPSED: Duration = Duration::from_secs(300);
/// Default cap on a server's `Retry-After`, and the longest pause after a 429 without one.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Default time that dropping the last client handle spends delivering what is queued.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default wait between a trace's answer and the first attempt of scores held for it.
pub const DEFAULT_TRACE_SCORE_DELAY: Duration = Duration::from_millis(500);

/// Longer settings are cut to this: "a year" means "never" for every duration here, and
/// keeps the worker's clock arithmetic from overflowing on `Duration::MAX`.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// What `score()` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueFullPolicy {
    /// Drop the new record at once, count it as `dropped.queue_full` and return
    /// [`ScoreError::QueueFull`](crate::ScoreError::QueueFull). The default: the caller never
    /// waits.
    #[default]
    DropNew,
    /// Wait up to this long for room, then drop as above.
    Block(Duration),
}

/// The API key: kept out of every `Debug` and `Display` output.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A checked configuration, as the client and its worker use it.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) api_key: HeaderValue,
    pub(crate) project_name: HeaderValue,
    pub(crate) scores_url: Url,
    pub(crate) traces_url: Url,
    pub(crate) environment: Option<String>,
    pub(crate) release: Option<String>,
    pub(crate) debug: bool,
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) max_queue_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_initial_backoff: Duration,
    pub(crate) retry_max_backoff: Duration,
    pub(crate) retry_max_elapsed: Duration,
    pub(crate) max_retry_after: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) queue_full: QueueFullPolicy,
    pub(crate) trace_score_delay: Duration,
}

/// Builds a [`Client`]. [`Client::builder`] starts from the defaults alone;
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
/// | [`max_in_flight`](Self::max_in_flight) | [`DEFAULT_MAX_IN_FLIGHT`] | `PANDAPROBE_MAX_IN_FLIGHT` |
/// | [`request_timeout`](Self::request_timeout) | [`DEFAULT_REQUEST_TIMEOUT`] | `PANDAPROBE_REQUEST_TIMEOUT` (seconds) |
/// | [`connect_timeout`](Self::connect_timeout) | [`DEFAULT_CONNECT_TIMEOUT`] | `PANDAPROBE_CONNECT_TIMEOUT` (seconds) |
/// | [`max_retries`](Self::max_retries) | [`DEFAULT_MAX_RETRIES`] | `PANDAPROBE_MAX_RETRIES` |
/// | [`retry_backoff`](Self::retry_backoff) | [`DEFAULT_RETRY_INITIAL_BACKOFF`], [`DEFAULT_RETRY_MAX_BACKOFF`] | none |
/// | [`retry_max_elapsed`](Self::retry_max_elapsed) | [`DEFAULT_RETRY_MAX_ELAPSED`] | none |
/// | [`max_retry_after`](Self::max_retry_after) | [`DEFAULT_MAX_RETRY_AFTER`] | none |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | [`DEFAULT_SHUTDOWN_TIMEOUT`] | `PANDAPROBE_SHUTDOWN_TIMEOUT` (seconds) |
/// | [`queue_full`](Self::queue_full) | [`QueueFullPolicy::DropNew`] | none |
/// | [`trace_score_delay`](Self::trace_score_delay) | [`DEFAULT_TRACE_SCORE_DELAY`] | none |
///
/// Booleans follow the Python SDK: `true`, `1` or `yes` in any case is true, anything else false.
/// Durations longer than a year (`Duration::MAX` included) are taken as a year: "never".
#[derive(Clone)]
#[must_use]
pub struct ClientBuilder {
    api_key: Option<ApiKey>,
    project_name: Option<String>,
    endpoint: String,
    environment: Option<String>,
    release: Option<String>,
    enabled: bool,
    debug: bool,
    batch_size: usize,
    flush_interval: Duration,
    max_queue_size: usize,
    max_in_flight: usize,
    request_timeout: Duration,
    connect_timeout: Duration,
    max_retries: u32,
    retry_initial_backoff: Duration,
    retry_max_backoff: Duration,
    retry_max_elapsed: Duration,
    max_retry_after: Duration,
    shutdown_timeout: Duration,
    queue_full: QueueFullPolicy,
    trace_score_delay: Duration,
    /// Environment values that did not parse, reported by `build()` unless a setter replaced them.
    env_errors: Vec<ConfigError>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key)
            .field("project_name", &self.project_name)
            .field("endpoint", &self.endpoint)
            .field("enabled", &self.enabled)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue_size", &self.max_queue_size)
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
            trace_score_delay: DEFAULT_TRACE_SCORE_DELAY,
            env_errors: Vec::new(),
        }
    }
}

/// Every variable [`ClientBuilder::from_env`] reads.
const ENV_VARS: [&str; 15] = [
    "PANDAPROBE_API_KEY",
    "PANDAPROBE_PROJECT_NAME",
    "PANDAPROBE_ENDPOINT",
    "PANDAPROBE_ENVIRONMENT",
    "PANDAPROBE_RELEASE",
    "PANDAPROBE_ENABLED",
    "PANDAPROBE_DEBUG",
    "PANDAPROBE_BATCH_SIZE",
    "PANDAPROBE_MAX_QUEUE_SIZE",
    "PANDAPROBE_MAX_IN_FLIGHT",
    "PANDAPROBE_MAX_RETRIES",
    "PANDAPROBE_FLUSH_INTERVAL",
    "PANDAPROBE_REQUEST_TIMEOUT",
    "PANDAPROBE_CONNECT_TIMEOUT",
    "PANDAPROBE_SHUTDOWN_TIMEOUT",
];

/// Parses the Python SDK's booleans: `true`, `1`, `yes` in any case; anything else is false.
fn parse_bool(value: &str) -> bool {
    let value = value.trim();
    ["true", "1", "yes"]
        .iter()
        .any(|t| value.eq_ignore_ascii_case(t))
}

fn parse_count(setting: &'static str, value: &str) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| invalid(setting, format!("{value:?} is not a whole number")))
}

/// A count that must be at least 1, checked here so the error names the variable.
fn parse_positive(setting: &'static str, value: &str) -> Result<usize, ConfigError> {
    match parse_count(setting, value)? {
        0 => Err(invalid(setting, "must be at least 1")),
        n => Ok(n),
    }
}

fn parse_seconds(setting: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| invalid(setting, format!("{value:?} is not a number of seconds")))
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
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
            b.apply_var(name.as_ref(), value.as_ref());
        }
        b
    }

    fn apply_var(&mut self, name: &str, value: &str) {
        // Errors name the variable, so it must outlive this call.
        let Some(name) = ENV_VARS.iter().copied().find(|known| *known == name) else {
            return;
        };
        let mut record = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                self.env_errors.push(e);
            }
        };
        match name {
            "PANDAPROBE_API_KEY" => self.api_key = Some(ApiKey(value.to_owned())),
            "PANDAPROBE_PROJECT_NAME" => self.project_name = Some(value.to_owned()),
            "PANDAPROBE_ENDPOINT" => self.endpoint = value.to_owned(),
            "PANDAPROBE_ENVIRONMENT" => self.environment = Some(value.to_owned()),
            "PANDAPROBE_RELEASE" => self.release = Some(value.to_owned()),
            "PANDAPROBE_ENABLED" => self.enabled = parse_bool(value),
            "PANDAPROBE_DEBUG" => self.debug = parse_bool(value),
            "PANDAPROBE_BATCH_SIZE" => {
                record(parse_positive(name, value).map(|n| self.batch_size = n))
            }
            "PANDAPROBE_MAX_QUEUE_SIZE" => {
                record(parse_positive(name, value).map(|n| self.max_queue_size = n))
            }
            "PANDAPROBE_MAX_IN_FLIGHT" => {
                record(parse_positive(name, value).map(|n| self.max_in_flight = n))
            }
            "PANDAPROBE_MAX_RETRIES" => record(
                parse_count(name, value)
                    .map(|n| self.max_retries = u32::try_from(n).unwrap_or(u32::MAX)),
            ),
            "PANDAPROBE_FLUSH_INTERVAL" => {
                record(parse_seconds(name, value).map(|d| self.flush_interval = d))
            }
            "PANDAPROBE_REQUEST_TIMEOUT" => {
                record(parse_seconds(name, value).map(|d| self.request_timeout = d))
            }
            "PANDAPROBE_CONNECT_TIMEOUT" => {
                record(parse_seconds(name, value).map(|d| self.connect_timeout = d))
            }
            "PANDAPROBE_SHUTDOWN_TIMEOUT" => {
                record(parse_seconds(name, value).map(|d| self.shutdown_timeout = d))
            }
            _ => {}
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

    /// Capacity of the record queue. Default [`DEFAULT_MAX_QUEUE_SIZE`]. Its memory is
    /// reserved up front (about 100 bytes a slot). Beyond the queue, the worker holds at most
    /// `max(1024, 4 × max_in_flight, 2 × batch_size)` records (in flight or waiting for a
    /// retry), and never more than `max(max_queue_size, 2 × max_in_flight)`.
    pub fn max_queue_size(self, size: usize) -> Self {
        let mut b = self.overridden("PANDAPROBE_MAX_QUEUE_SIZE");
        b.max_queue_size = size;
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

    /// Retries after a record's first attempt; `0` disables retrying. Default
    /// [`DEFAULT_MAX_RETRIES`].
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

    /// The longest one record is retried for, counted from its first attempt. Default
    /// [`DEFAULT_RETRY_MAX_ELAPSED`].
    pub fn retry_max_elapsed(mut self, max: Duration) -> Self {
        self.retry_max_elapsed = max;
        self
    }

    /// Cap on a server's `Retry-After`, and on the pause after a 429 that has none. Default
    /// [`DEFAULT_MAX_RETRY_AFTER`].
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

    /// How long scores held for a trace this client sent wait after the trace's answer before
    /// their first attempt: the server stores traces a moment after answering, and a score
    /// for a trace not yet stored is answered 500. Default [`DEFAULT_TRACE_SCORE_DELAY`].
    pub fn trace_score_delay(mut self, delay: Duration) -> Self {
        self.trace_score_delay = delay;
        self
    }

    /// Checks the settings and starts the client's worker thread (unless disabled).
    pub fn build(self) -> Result<Client, ConfigError> {
        if !self.enabled {
            return Ok(Client::disabled());
        }
        Client::start(self.into_config()?)
    }

    pub(crate) fn into_config(self) -> Result<Config, ConfigError> {
        if let Some(e) = self.env_errors.into_iter().next() {
            return Err(e);
        }
        let api_key = match self.api_key {
            Some(ApiKey(key)) if !key.trim().is_empty() => key,
            _ => {
                return Err(ConfigError::Missing {
                    setting: "api_key",
                    env: "PANDAPROBE_API_KEY",
                })
            }
        };
        let mut api_key = HeaderValue::from_str(api_key.trim()).map_err(|_| {
            invalid(
                "api_key",
                "it contains characters not allowed in an HTTP header",
            )
        })?;
        api_key.set_sensitive(true);
        let project_name = match self.project_name {
            Some(name) => validate_project_name(&name)?,
            None => {
                return Err(ConfigError::Missing {
                    setting: "project_name",
                    env: "PANDAPROBE_PROJECT_NAME",
                })
            }
        };
        let (scores_url, traces_url) = parse_endpoint(&self.endpoint)?;
        let positive = |setting: &'static str, n: usize| {
            if n == 0 {
                Err(invalid(setting, "must be at least 1"))
            } else {
                Ok(n)
            }
        };
        let nonzero = |setting: &'static str, d: Duration| {
            if d.is_zero() {
                Err(invalid(setting, "must be longer than zero"))
            } else {
                Ok(d.min(MAX_DURATION))
            }
        };
        Ok(Config {
            api_key,
            project_name,
            scores_url,
            traces_url,
            environment: self.environment,
            release: self.release,
            debug: self.debug,
            batch_size: positive("batch_size", self.batch_size)?,
            flush_interval: nonzero("flush_interval", self.flush_interval)?,
            max_queue_size: positive("max_queue_size", self.max_queue_size)?,
            max_in_flight: positive("max_in_flight", self.max_in_flight)?,
            request_timeout: nonzero("request_timeout", self.request_timeout)?,
            connect_timeout: nonzero("connect_timeout", self.connect_timeout)?,
            max_retries: self.max_retries,
            retry_initial_backoff: nonzero("retry_backoff", self.retry_initial_backoff)?,
            retry_max_backoff: self
                .retry_max_backoff
                .max(self.retry_initial_backoff)
                .min(MAX_DURATION),
            retry_max_elapsed: self.retry_max_elapsed,
            max_retry_after: self.max_retry_after.min(MAX_DURATION),
            shutdown_timeout: self.shutdown_timeout.min(MAX_DURATION),
            queue_full: self.queue_full,
            trace_score_delay: self.trace_score_delay.min(MAX_DURATION),
        })
    }
}

/// The server's rule: 1-255 characters of letters, digits, space, `-`, `_`, `.`, `'`, starting
/// and ending with a letter or digit.
fn validate_project_name(name: &str) -> Result<HeaderValue, ConfigError> {
    let chars = name.chars().count();
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '\'');
    let edges_ok = name.chars().next().is_some_and(char::is_alphanumeric)
        && name.chars().last().is_some_and(char::is_alphanumeric);
    if chars == 0 || chars > 255 || !edges_ok || !name.chars().all(allowed) {
        return Err(invalid(
            "project_name",
            format!(
                "{name:?} must be 1-255 letters, digits, spaces, '-', '_', '.' or \"'\", \
                 starting and ending with a letter or digit"
            ),
        ));
    }
    HeaderValue::from_str(name).map_err(|_| {
        invalid(
            "project_name",
            format!("{name:?} cannot be sent in an HTTP header (use ASCII)"),
        )
    })
}

fn parse_endpoint(endpoint: &str) -> Result<(Url, Url), ConfigError> {
    let bad = |reason: String| invalid("endpoint", reason);
    let base = endpoint.trim().trim_end_matches('/');
    let url = Url::parse(base).map_err(|e| bad(format!("{endpoint:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(format!(
            "{endpoint:?} must be an http:// or https:// URL with a host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(format!(
            "{endpoint:?} must not have a query or fragment"
        )));
    }
    let join = |path: &str| {
        Url::parse(&format!("{base}{path}")).map_err(|e| bad(format!("{endpoint:?}: {e}")))
    };
    Ok((join("/evaluations/trace-scores")?, join("/traces")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> ClientBuilder {
        ClientBuilder::from_vars(pairs.iter().copied())
    }

    const BASE: [(&str, &str); 2] = [
        ("PANDAPROBE_API_KEY", "sk_pp_secret"),
        ("PANDAPROBE_PROJECT_NAME", "my project"),
    ];

    #[test]
    fn reads_every_variable() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("PANDAPROBE_ENDPOINT", "http://127.0.0.1:8000/"),
            ("PANDAPROBE_ENVIRONMENT", "prod"),
            ("PANDAPROBE_RELEASE", "1.2.3"),
            ("PANDAPROBE_DEBUG", "YES"),
            ("PANDAPROBE_BATCH_SIZE", "7"),
            ("PANDAPROBE_FLUSH_INTERVAL", "0.25"),
            ("PANDAPROBE_MAX_QUEUE_SIZE", "42"),
            ("PANDAPROBE_MAX_IN_FLIGHT", "3"),
            ("PANDAPROBE_MAX_RETRIES", "2"),
            ("PANDAPROBE_REQUEST_TIMEOUT", "1.5"),
        ]);
        let c = vars(&pairs).into_config().unwrap();
        assert_eq!(
            c.scores_url.as_str(),
            "http://127.0.0.1:8000/evaluations/trace-scores"
        );
        assert_eq!(c.traces_url.as_str(), "http://127.0.0.1:8000/traces");
        assert_eq!(c.environment.as_deref(), Some("prod"));
        assert_eq!(c.release.as_deref(), Some("1.2.3"));
        assert!(c.debug);
        assert_eq!(c.batch_size, 7);
        assert_eq!(c.flush_interval, Duration::from_millis(250));
        assert_eq!(c.max_queue_size, 42);
        assert_eq!(c.max_in_flight, 3);
        assert_eq!(c.max_retries, 2);
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.project_name, "my project");
    }

    #[test]
    fn enabled_follows_the_python_rules() {
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("on", false),
            ("", false),
        ] {
            assert_eq!(
                vars(&[("PANDAPROBE_ENABLED", value)]).enabled,
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_setting() {
        let mut pairs = BASE.to_vec();
        pairs.push(("PANDAPROBE_BATCH_SIZE", "ten"));
        let err = vars(&pairs).into_config().unwrap_err();
        assert!(err.to_string().contains("PANDAPROBE_BATCH_SIZE"), "{err}");
        // A setter replaces the unusable value.
        assert!(vars(&pairs).batch_size(5).into_config().is_ok());

        let mut pairs = BASE.to_vec();
        pairs.push(("PANDAPROBE_FLUSH_INTERVAL", "-1"));
        assert!(vars(&pairs).into_config().is_err());

        let mut pairs = BASE.to_vec();
        pairs.push(("PANDAPROBE_MAX_QUEUE_SIZE", "0"));
        let err = vars(&pairs).into_config().unwrap_err();
        assert!(
            err.to_string().contains("PANDAPROBE_MAX_QUEUE_SIZE"),
            "{err}"
        );

        let zero = vars(&BASE).batch_size(0).into_config().unwrap_err();
        assert!(zero.to_string().contains("batch_size"), "{zero}");
        let zero = vars(&BASE).max_queue_size(0).into_config().unwrap_err();
        assert!(zero.to_string().contains("max_queue_size"), "{zero}");
    }

    #[test]
    fn setters_win_over_the_environment() {
        let mut pairs = BASE.to_vec();
        pairs.push(("PANDAPROBE_BATCH_SIZE", "7"));
        let c = vars(&pairs).batch_size(9).into_config().unwrap();
        assert_eq!(c.batch_size, 9);
    }

    #[test]
    fn endless_durations_are_cut_to_a_year() {
        let c = vars(&BASE)
            .flush_interval(Duration::MAX)
            .request_timeout(Duration::MAX)
            .retry_backoff(Duration::MAX, Duration::MAX)
            .max_retry_after(Duration::MAX)
            .shutdown_timeout(Duration::MAX)
            .trace_score_delay(Duration::MAX)
            .into_config()
            .unwrap();
        for d in [
            c.flush_interval,
            c.request_timeout,
            c.retry_initial_backoff,
            c.retry_max_backoff,
            c.max_retry_after,
            c.shutdown_timeout,
            c.trace_score_delay,
        ] {
            assert_eq!(d, MAX_DURATION);
        }
    }

    #[test]
    fn requires_key_and_project() {
        let err = ClientBuilder::new()
            .project_name("p")
            .into_config()
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                setting: "api_key",
                ..
            }
        ));
        let err = ClientBuilder::new().api_key("k").into_config().unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                setting: "project_name",
                ..
            }
        ));
    }

    #[test]
    fn project_names_follow_the_server_rules() {
        for good in ["a", "My Project", "o'brien.v2_x-1", "é"] {
            let r = ClientBuilder::new()
                .api_key("k")
                .project_name(good)
                .into_config();
            assert!(r.is_ok(), "{good}");
        }
        for bad in ["", " a", "a ", "-a", "a/b", &"x".repeat(256)] {
            let r = ClientBuilder::new()
                .api_key("k")
                .project_name(bad)
                .into_config();
            assert!(r.is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_are_checked() {
        for bad in ["", "not a url", "ftp://x", "http://x/?q=1", "http://"] {
            let r = vars(&BASE).endpoint(bad).into_config();
            assert!(r.is_err(), "{bad}");
        }
        let c = vars(&BASE)
            .endpoint("https://h/base//")
            .into_config()
            .unwrap();
        assert_eq!(c.traces_url.as_str(), "https://h/base/traces");
    }

    #[test]
    fn the_key_never_shows() {
        let b = vars(&BASE);
        assert!(!format!("{b:?}").contains("sk_pp_secret"));
        let c = b.into_config().unwrap();
        assert!(!format!("{c:?}").contains("sk_pp_secret"));
    }
}
