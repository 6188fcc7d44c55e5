//! HTTP: one record, one request. Built and dropped on the worker's own runtime.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::Url;

use crate::config::{Config, RateLimit};
use crate::error::StartError;

/// The most of an answer's body the SDK reads: enough for the server's error message, and a
/// bound on what a hostile or broken server can make it hold.
pub(crate) const MAX_ANSWER_BYTES: usize = 4096;

const USER_AGENT_VALUE: &str = concat!("pandaprobe-rust/", env!("CARGO_PKG_VERSION"));

/// What one HTTP attempt produced, as the transport saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The server answered.
    Answered {
        status: u16,
        /// `Retry-After`, already converted to a wait (uncapped).
        retry_after: Option<Duration>,
        /// The server's words, shortened: `detail` or `error` of a JSON body, else its text.
        message: String,
        /// The body was the server's domain error (`{"detail": …}`), not the rate limiter's
        /// (`{"error": …}`): on a 429 that means a used-up quota.
        detail: bool,
    },
    /// No answer. `ambiguous` when the request may have reached the server (a timeout or a
    /// broken connection after sending), so a retry may store the record twice.
    Failed { ambiguous: bool, message: String },
}

impl Attempt {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Attempt::Answered { status, .. } => Some(*status),
            Attempt::Failed { .. } => None,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Attempt::Answered { message, .. } | Attempt::Failed { message, .. } => message,
        }
    }
}

/// Cleans a server's or the HTTP stack's words before they are logged or handed to the hook:
/// a server, proxy or WAF that echoes request headers must not put the API key into a log
/// line, and control characters are escaped so that no server can forge log lines.
#[derive(Clone)]
pub(crate) struct Redactor {
    secret: Arc<str>,
}

impl Redactor {
    pub(crate) fn new(api_key: &HeaderValue) -> Redactor {
        let secret = String::from_utf8_lossy(api_key.as_bytes()).into_owned();
        Redactor {
            secret: secret.into(),
        }
    }

    /// The text with every occurrence of the key replaced, control characters escaped, then
    /// shortened to `max` bytes (after the redaction, so a cut cannot leave half a key).
    pub(crate) fn clean(&self, text: &str, max: usize) -> String {
        let redacted = if self.secret.len() >= 4 {
            text.replace(&*self.secret, "[redacted]")
        } else {
            text.to_owned()
        };
        let mut out = String::with_capacity(redacted.len());
        for c in redacted.chars() {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        shorten(out, max)
    }
}

/// How much of a server's words the SDK keeps for logs and the hook.
const SHOWN: usize = 300;

/// Makes the worker's HTTP clients, all alike but for their pool size.
type MakeClient = Box<dyn Fn(usize) -> Result<reqwest::Client, StartError> + Send>;

pub(crate) struct Transport {
    make_client: MakeClient,
    pub(crate) redactor: Redactor,
    /// Kept-alive connections, for first attempts.
    pooled: reqwest::Client,
    /// No idle connections kept: for probes and retries, which must not land on a socket the
    /// server has closed.
    fresh: reqwest::Client,
    max_idle: usize,
}

impl Transport {
    pub(crate) fn new(config: &Config) -> Result<Transport, StartError> {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-api-key"), config.api_key.clone());
        headers.insert(
            HeaderName::from_static("x-project-name"),
            config.project_name.clone(),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let request_timeout = config.request_timeout;
        // Under the request's own timeout, so that a connection that never completes (a TLS
        // handshake with a silent plain-HTTP port) fails as a connect error: no request was
        // sent, so it is no "maybe delivered".
        let connect_timeout = config.connect_timeout.min(request_timeout.mul_f64(0.9));
        let (roots, proxy) = (config.root_certificates.clone(), config.proxy.clone());
        let user_settings = config.http.clone();
        let make_client = move |max_idle: usize| {
            // The user's settings first, so that the SDK's own (the key's header, no
            // redirects, the timeouts) are the ones that hold.
            let mut builder = match &user_settings {
                Some(settings) => {
                    let configure = || (settings.0)(reqwest::Client::builder());
                    std::panic::catch_unwind(AssertUnwindSafe(configure)).map_err(|_| {
                        StartError::new(io::Error::other("the configure_http function panicked"))
                    })?
                }
                None => reqwest::Client::builder(),
            };
            builder = builder
                .default_headers(headers.clone())
                .timeout(request_timeout)
                .connect_timeout(connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .http1_only()
                .pool_max_idle_per_host(max_idle);
            for root in &roots {
                builder = builder.add_root_certificate(root.clone());
            }
            if let Some(proxy) = &proxy {
                builder = builder.proxy(proxy.0.clone());
            }
            builder.build().map_err(StartError::new)
        };
        let max_idle = config.max_in_flight;
        Ok(Transport {
            pooled: make_client(max_idle)?,
            fresh: make_client(0)?,
            make_client: Box::new(make_client),
            redactor: Redactor::new(&config.api_key),
            max_idle,
        })
    }

    /// The client for the next request: a fresh connection, or one from the pool.
    pub(crate) fn client(&self, fresh_connection: bool) -> reqwest::Client {
        if fresh_connection {
            self.fresh.clone()
        } else {
            self.pooled.clone()
        }
    }

    /// After a 500 the server closes the connection without saying so, and the pool would
    /// hand that socket to the next request: start a new pool. Requests under way keep the
    /// old one until they finish.
    pub(crate) fn renew_pool(&mut self) {
        if let Ok(pooled) = (self.make_client)(self.max_idle) {
            self.pooled = pooled;
        }
    }
}

/// Sends one request (a `POST` of `body`, or a `GET` without one) and reports what happened;
/// never fails otherwise.
pub(crate) async fn send(
    client: reqwest::Client,
    url: Url,
    body: Option<Bytes>,
    request_id: HeaderValue,
    redactor: Redactor,
) -> Attempt {
    let request = match body {
        Some(body) => client.post(url).body(body),
        None => client.get(url),
    };
    let sent = request
        .header(HeaderName::from_static("x-request-id"), request_id)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return failed(&e, &redactor),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    // Read the answer (so the connection can be reused) but never more than the cap.
    let mut head = Vec::with_capacity(256);
    let read = async {
        while head.len() < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_ANSWER_BYTES - head.len();
                    head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
    };
    // A 2xx status means stored when it arrives: its body is drained only briefly (for the
    // connection's reuse), so a body that never comes cannot make it "maybe delivered".
    let success = (200..300).contains(&status);
    if success {
        let _ = tokio::time::timeout(SUCCESS_BODY_WAIT, read).await;
    } else {
        read.await;
    }
    let (message, detail) = if success {
        (String::new(), false)
    } else {
        let (message, detail) = server_message(&head);
        (redactor.clean(&message, SHOWN), detail)
    };
    Attempt::Answered {
        status,
        retry_after,
        message,
        detail,
    }
}

/// How long a success's body is waited for, only to keep its connection.
const SUCCESS_BODY_WAIT: Duration = Duration::from_millis(500);

fn failed(e: &reqwest::Error, redactor: &Redactor) -> Attempt {
    // A refused or failed connect never reached the server; anything later might have.
    let ambiguous = !e.is_connect();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    let message = redactor.clean(&message, 2 * SHOWN);
    Attempt::Failed { ambiguous, message }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (a date in the past means now).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The server's own words: `detail` or `error` from a JSON body, else the text, shortened; and
/// whether it was a `detail` (a domain error).
fn server_message(body: &[u8]) -> (String, bool) {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["detail", "error"] {
            if let Some(text) = json.get(key).and_then(|v| v.as_str()) {
                let mut message = text.to_owned();
                if let Some(errors) = json.get("errors") {
                    message.push_str(": ");
                    message.push_str(&errors.to_string());
                }
                return (message, key == "detail");
            }
        }
    }
    (String::from_utf8_lossy(body).into_owned(), false)
}

/// The limit a 429's body names: `Rate limit exceeded: 200 per 1 minute`.
pub(crate) fn named_limit(message: &str) -> Option<RateLimit> {
    let (before, after) = message.split_once(" per ")?;
    let limit: u32 = before.rsplit(' ').next()?.trim().parse().ok()?;
    let mut words = after.split_whitespace();
    let count: u64 = words.next()?.parse().ok()?;
    let unit = words.next()?.trim_end_matches(|c: char| !c.is_alphabetic());
    let unit = unit.strip_suffix('s').unwrap_or(unit);
    let seconds = match unit.to_ascii_lowercase().as_str() {
        "millisecond" => return Some(RateLimit::new(limit, Duration::from_millis(count))),
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        "month" => 30 * 86_400,
        "year" => 365 * 86_400,
        _ => return None,
    };
    Some(RateLimit::new(
        limit,
        Duration::from_secs(count.saturating_mul(seconds)),
    ))
}

fn shorten(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_redacted_before_the_text_is_shortened_and_control_characters_escaped() {
        let key = HeaderValue::from_static("sk_pp_0123456789abcdef");
        let r = Redactor::new(&key);
        let echoed = "bad request\r\nx-api-key: sk_pp_0123456789abcdef\r\nWARN forged line";
        let clean = r.clean(echoed, 300);
        assert!(!clean.contains("sk_pp_0123456789abcdef"), "{clean}");
        assert!(clean.contains("[redacted]"), "{clean}");
        assert!(!clean.contains('\n') && !clean.contains('\r'), "{clean}");
        assert!(clean.contains("\\r\\n"), "{clean}");
        // A key that would straddle the cut is redacted first, so no prefix of it survives.
        let long = format!("{}{}", "x".repeat(290), "sk_pp_0123456789abcdef");
        let clean = r.clean(&long, 300);
        assert!(!clean.contains("sk_pp_0123"), "{clean}");
        assert!(r.clean("\u{1b}[31m\u{2028}", 300).starts_with("\\u{1b}"));
    }

    #[test]
    fn server_messages_are_extracted_and_bounded() {
        assert_eq!(
            server_message(br#"{"detail":"Invalid API key"}"#),
            ("Invalid API key".into(), true)
        );
        assert_eq!(
            server_message(br#"{"error":"Rate limit exceeded: 200 per 1 minute"}"#),
            ("Rate limit exceeded: 200 per 1 minute".into(), false)
        );
        let (v, _) = server_message(
            br#"{"detail":"Validation error","errors":[{"field":"value","message":"bad"}]}"#,
        );
        assert!(
            v.starts_with("Validation error: [") && v.contains("bad"),
            "{v}"
        );
        assert_eq!(
            server_message(b"Internal Server Error"),
            ("Internal Server Error".into(), false)
        );
        let (long, _) = server_message(&[b'x'; 5000]);
        let key = HeaderValue::from_static("sk_pp_key");
        assert!(Redactor::new(&key).clean(&long, SHOWN).chars().count() <= 301);
        let (garbage, _) = server_message(&[0xff, 0xfe, b'a']);
        assert!(garbage.ends_with('a'));
        assert_eq!(shorten("ééé".into(), 3), "é…");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 86400 ", now),
            Some(Duration::from_secs(86400))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn the_limit_is_named_by_the_429_body() {
        let s = Duration::from_secs;
        for (text, limit, window) in [
            ("Rate limit exceeded: 200 per 1 minute", 200, s(60)),
            ("Rate limit exceeded: 100 per 1 minute", 100, s(60)),
            ("Rate limit exceeded: 5 per 2 seconds", 5, s(2)),
            ("Rate limit exceeded: 10 per 1 hour", 10, s(3600)),
            (
                "Rate limit exceeded: 5 per 250 millisecond",
                5,
                Duration::from_millis(250),
            ),
        ] {
            assert_eq!(
                named_limit(text),
                Some(RateLimit::new(limit, window)),
                "{text}"
            );
        }
        for text in [
            "",
            "Too many requests",
            "Rate limit exceeded: x per 1 minute",
        ] {
            assert_eq!(named_limit(text), None, "{text}");
        }
    }
}
