//! From a builder to the settings: every value checked, the environment's errors first.

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Url;

use super::builder::ClientBuilder;
use super::defaults::*;
use super::env::invalid;
use super::network;
use super::settings::*;
use crate::error::ConfigError;

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
        http: b.http,
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

impl ClientBuilder {
    pub(crate) fn into_config(self) -> Result<Config, ConfigError> {
        resolve(self)
    }
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
