//! The checked settings the client and its worker run on.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Url;

use super::defaults::QueueFullPolicy;
use super::network;
use crate::capture::Capture;
use crate::drop_event::DropHook;

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
    /// The user's own settings for the HTTP client, applied first.
    pub(crate) http: Option<network::HttpSettings>,
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
