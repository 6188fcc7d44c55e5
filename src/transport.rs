//! HTTP: one record, one request. Built and dropped on the worker's own runtime.

use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::Url;

use crate::config::Config;
use crate::retry::{parse_retry_after, Attempt};

/// The most of an answer's body the SDK reads: enough for the server's error message, and a
/// bound on what a hostile or broken server can make it hold.
pub(crate) const MAX_ANSWER_BYTES: usize = 4096;

const USER_AGENT_VALUE: &str = concat!("pandaprobe-rust/", env!("CARGO_PKG_VERSION"));

pub(crate) struct Transport {
    /// Kept-alive connections, for first attempts.
    pooled: reqwest::Client,
    /// No idle connections kept: a retry after a 500 or a broken connection must not land on a
    /// socket the server has closed.
    fresh: reqwest::Client,
}

impl Transport {
    pub(crate) fn new(config: &Config) -> Result<Transport, reqwest::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-api-key"), config.api_key.clone());
        headers.insert(
            HeaderName::from_static("x-project-name"),
            config.project_name.clone(),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let builder = || {
            reqwest::Client::builder()
                .default_headers(headers.clone())
                .timeout(config.request_timeout)
                .connect_timeout(config.connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .http1_only()
        };
        Ok(Transport {
            pooled: builder()
                .pool_max_idle_per_host(config.max_in_flight)
                .build()?,
            fresh: builder().pool_max_idle_per_host(0).build()?,
        })
    }

    /// Sends one body and reports what happened; never fails otherwise.
    pub(crate) async fn send(
        &self,
        url: Url,
        body: Bytes,
        request_id: HeaderValue,
        fresh_connection: bool,
    ) -> Attempt {
        let client = if fresh_connection {
            &self.fresh
        } else {
            &self.pooled
        };
        let sent = client
            .post(url)
            .header(HeaderName::from_static("x-request-id"), request_id)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return failed(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Read the answer (so the connection can be reused) but never more than the cap.
        let mut head = Vec::with_capacity(256);
        while head.len() < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_ANSWER_BYTES - head.len();
                    head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Only an error's words are worth reading; a success's body is just drained.
        let message = if (200..300).contains(&status) {
            String::new()
        } else {
            server_message(&head)
        };
        Attempt::Answered {
            status,
            retry_after,
            message,
        }
    }
}

fn failed(e: &reqwest::Error) -> Attempt {
    // A refused or failed connect never reached the server; anything later might have.
    let ambiguous = !e.is_connect();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    Attempt::Failed { ambiguous, message }
}

/// The server's own words: `detail` or `error` from a JSON body, else the text, shortened.
fn server_message(body: &[u8]) -> String {
    const SHOWN: usize = 300;
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["detail", "error"] {
            if let Some(text) = json.get(key).and_then(|v| v.as_str()) {
                let mut message = text.to_owned();
                if let Some(errors) = json.get("errors") {
                    message.push_str(": ");
                    message.push_str(&errors.to_string());
                }
                return shorten(message, SHOWN);
            }
        }
    }
    shorten(String::from_utf8_lossy(body).into_owned(), SHOWN)
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
    fn server_messages_are_extracted_and_bounded() {
        assert_eq!(
            server_message(br#"{"detail":"Invalid API key"}"#),
            "Invalid API key"
        );
        assert_eq!(
            server_message(br#"{"error":"Rate limit exceeded: 200 per 1 minute"}"#),
            "Rate limit exceeded: 200 per 1 minute"
        );
        let v = server_message(
            br#"{"detail":"Validation error","errors":[{"field":"value","message":"bad"}]}"#,
        );
        assert!(
            v.starts_with("Validation error: [") && v.contains("bad"),
            "{v}"
        );
        assert_eq!(
            server_message(b"Internal Server Error"),
            "Internal Server Error"
        );
        let long = server_message(&[b'x'; 5000]);
        assert!(long.chars().count() <= 301);
        let garbage = server_message(&[0xff, 0xfe, b'a']);
        assert!(garbage.ends_with('a'));
        assert_eq!(shorten("ééé".into(), 3), "é…");
    }
}
