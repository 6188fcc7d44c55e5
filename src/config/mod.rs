//! Configuration: the builder and its defaults (`builder`), the `PANDAPROBE_*` environment
//! (`env`), and the checked settings the client and its worker run on (here).

mod builder;
mod env;
mod network;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Url;

use crate::capture::Capture;
use crate::drop_event::DropHook;
use crate::error::ConfigError;
use builder::ApiKey;
use env::invalid;

pub use builder::{
    ClientBuilder, QueueFullPolicy, DEFAULT_BATCH_SIZE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT,
    DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_QUEUE_BYTES, DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_INITIAL_BACKOFF, DEFAULT_RETRY_MAX_BACKOFF,
    DEFAULT_RETRY_MAX_ELAPSED, DEFAULT_SHUTDOWN_TIMEOUT,
};

/// Longer settings are cut to this: "a year" means "never" for every duration here, and
/// keeps the worker's clock arithmetic from overflowing on `Duration::MAX`.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A fixed-window request limit: at most `limit` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) limit: u32,
    pub(crate) window: Duration,
}

impl RateLimit {
    pub(crate) fn new(limit: u32, window: Duration) -> RateLimit {
        RateLimit {
            limit: limit.max(1),
            window: window.clamp(Duration::from_millis(1), MAX_DURATION),
        }
    }
}

/// The drop hook, with a `Debug` that shows it is set.
#[derive(Clone)]
pub(crate) struct Hook(pub(crate) Arc<DropHook>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hook>")
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
    pub(crate) max_queue_bytes: usize,
    pub(crate) max_record_bytes: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_initial_backoff: Duration,
    pub(crate) retry_max_backoff: Duration,
    pub(crate) retry_max_elapsed: Duration,
    pub(crate) max_retry_after: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// Set: requests are answered in memory and kept, not sent.
    pub(crate) capture: Option<Capture>,
    /// Trusted besides the built-in roots.
    pub(crate) root_certificates: Vec<reqwest::Certificate>,
    pub(crate) proxy: Option<network::Proxy>,
    pub(crate) queue_full: QueueFullPolicy,
    pub(crate) scores_rate_limit: Option<RateLimit>,
    pub(crate) traces_rate_limit: Option<RateLimit>,
    pub(crate) on_drop: Option<Hook>,
}

impl Config {
    /// The base URL, as the user gave it (without the trailing `/`).
    pub(crate) fn endpoint(&self) -> &str {
        self.traces_url
            .as_str()
            .strip_suffix("/traces")
            .unwrap_or(self.traces_url.as_str())
    }

    /// `{base}/traces/{id}` followed by `more` segments (`spans`), or `None` if the base
    /// cannot take a path (never for an endpoint `resolve` accepted).
    pub(crate) fn trace_url(&self, trace_id: uuid::Uuid, more: &[&str]) -> Option<Url> {
        let mut url = self.traces_url.clone();
        {
            let mut path = url.path_segments_mut().ok()?;
            path.pop_if_empty().push(
                trace_id
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            );
            path.extend(more);
        }
        Some(url)
    }
}

/// Checks a builder's settings and resolves them into the configuration the client runs on.
fn resolve(b: ClientBuilder) -> Result<Config, ConfigError> {
    if let Some(e) = b.env_errors.into_iter().next() {
        return Err(e);
    }
    // A capturing client sends nothing: it needs no key or project of its own.
    let capturing = b.capture.is_some();
    let api_key = match b.api_key {
        Some(ApiKey(key)) if !key.trim().is_empty() => key,
        None if capturing => "captured".to_owned(),
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
    let project_name = match b.project_name {
        Some(name) => validate_project_name(&name)?,
        None if capturing => HeaderValue::from_static("captured"),
        None => {
            return Err(ConfigError::Missing {
                setting: "project_name",
                env: "PANDAPROBE_PROJECT_NAME",
            })
        }
    };
    let (scores_url, traces_url) = parse_endpoint(&b.endpoint)?;
    let root_certificates = network::root_certificates(&b.root_certificates)?;
    let proxy = network::proxy(b.proxy.as_deref())?;
    for (setting, value) in [("environment", &b.environment), ("release", &b.release)] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(invalid(
                setting,
                "contains a NUL character, which the server cannot store",
            ));
        }
    }
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
        environment: b.environment,
        release: b.release,
        debug: b.debug,
        batch_size: positive("batch_size", b.batch_size)?,
        flush_interval: nonzero("flush_interval", b.flush_interval)?,
        max_queue_size: positive("max_queue_size", b.max_queue_size)?,
        max_queue_bytes: positive("max_queue_bytes", b.max_queue_bytes)?,
        max_record_bytes: positive("max_record_bytes", b.max_record_bytes)?,
        max_in_flight: positive("max_in_flight", b.max_in_flight)?,
        request_timeout: nonzero("request_timeout", b.request_timeout)?,
        connect_timeout: nonzero("connect_timeout", b.connect_timeout)?,
        max_retries: b.max_retries,
        retry_initial_backoff: nonzero("retry_backoff", b.retry_initial_backoff)?,
        retry_max_backoff: b
            .retry_max_backoff
            .max(b.retry_initial_backoff)
            .min(MAX_DURATION),
        retry_max_elapsed: b.retry_max_elapsed.min(MAX_DURATION),
        max_retry_after: b.max_retry_after.min(MAX_DURATION),
        shutdown_timeout: b.shutdown_timeout.min(MAX_DURATION),
        queue_full: b.queue_full,
        scores_rate_limit: b.scores_rate_limit,
        traces_rate_limit: b.traces_rate_limit,
        on_drop: b.on_drop,
        capture: b.capture,
        root_certificates,
        proxy,
    })
}

/// The server's rule: 1-255 characters of letters, digits, space, `-`, `_`, `.`, `'`, starting
/// and ending with a letter or digit.
pub(super) fn validate_project_name(name: &str) -> Result<HeaderValue, ConfigError> {
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

/// The endpoint as it may be shown in an error or `Debug`: any user name and password (the
/// part between `://` and `@`) is left out, so that no credential is ever printed.
pub(crate) fn shown_endpoint(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[userinfo removed]@{}", &rest[at + 1..]),
        None => endpoint.to_owned(),
    }
}

pub(super) fn parse_endpoint(endpoint: &str) -> Result<(Url, Url), ConfigError> {
    let bad = |reason: String| invalid("endpoint", reason);
    let shown = shown_endpoint(endpoint);
    let endpoint = &shown;
    let base = endpoint.trim().trim_end_matches('/');
    if shown.contains("[userinfo removed]@") {
        return Err(bad(
            "the endpoint must not carry a user name or password; the server authenticates \
             with the API key (api_key() or PANDAPROBE_API_KEY)"
                .into(),
        ));
    }
    let url = Url::parse(base).map_err(|e| bad(format!("{endpoint:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(format!(
            "{endpoint:?} must be an http:// or https:// URL with a host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "the endpoint must not carry a user name or password; the server authenticates \
             with the API key (api_key() or PANDAPROBE_API_KEY)"
                .into(),
        ));
    }
    if url.port() == Some(0) {
        return Err(bad(format!(
            "{endpoint:?} names port 0, which no server listens on"
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
            .retry_max_elapsed(Duration::MAX)
            .into_config()
            .unwrap();
        for d in [
            c.flush_interval,
            c.request_timeout,
            c.retry_initial_backoff,
            c.retry_max_backoff,
            c.max_retry_after,
            c.shutdown_timeout,
            c.retry_max_elapsed,
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
    fn an_endpoint_with_credentials_is_refused_without_echoing_them() {
        for url in [
            "http://user:s3cret@host",
            "https://s3cret@host/base",
            "http://user:s3cret@/x",
        ] {
            let err = vars(&BASE).endpoint(url).into_config().unwrap_err();
            let text = err.to_string();
            assert!(
                !text.contains("s3cret") && !text.contains("user:"),
                "{text}"
            );
            let debug = format!("{:?}", vars(&BASE).endpoint(url));
            assert!(!debug.contains("s3cret"), "{debug}");
        }
        assert_eq!(shown_endpoint("http://h:1/a@b"), "http://h:1/a@b");
    }

    #[test]
    fn port_zero_is_refused() {
        let err = vars(&BASE)
            .endpoint("http://127.0.0.1:0")
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("port 0"), "{err}");
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
        let id = uuid::Uuid::nil();
        assert_eq!(
            c.trace_url(id, &["spans"]).map(String::from).as_deref(),
            Some("https://h/base/traces/00000000-0000-0000-0000-000000000000/spans")
        );
    }

    #[test]
    fn environment_and_release_must_be_storable() {
        let err = vars(&BASE).release("1\0").into_config().unwrap_err();
        assert!(err.to_string().contains("release"), "{err}");
    }

    #[test]
    fn rate_limits_are_kept_sane() {
        let c = vars(&BASE)
            .scores_rate_limit(0, Duration::ZERO)
            .traces_rate_limit(100, Duration::from_secs(60))
            .into_config()
            .unwrap();
        assert_eq!(
            c.scores_rate_limit,
            Some(RateLimit::new(1, Duration::from_millis(1)))
        );
        assert_eq!(c.traces_rate_limit.map(|r| r.limit), Some(100));
    }

    #[test]
    fn the_key_never_shows() {
        let b = vars(&BASE);
        assert!(!format!("{b:?}").contains("sk_pp_secret"));
        let c = b.into_config().unwrap();
        assert!(!format!("{c:?}").contains("sk_pp_secret"));
    }
}
