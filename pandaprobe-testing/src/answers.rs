//! The answers the server sends: the real server's bodies for each status, the answers of
//! injected faults, and how an answer becomes an HTTP response.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::json_fields::FieldError;
use crate::rate_limit::RateLimit;
use crate::state::Store;
use crate::{HOSTED_SCORES_PER_MINUTE, HOSTED_TRACES_PER_MINUTE, TRACES_PATH};

/// An answer before it becomes a response, with what answering it stores and how long the
/// server works on it first.
pub(crate) struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    store: Option<Store>,
    work: Duration,
}

impl Answer {
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// Answered (and stored) only after `work`, as a database write takes time.
    pub(crate) fn after(mut self, work: Duration) -> Self {
        self.work = work;
        self
    }

    pub(crate) fn work(&self) -> Duration {
        self.work
    }

    pub(crate) fn storing(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// What answering stores; a second call gets `None`.
    pub(crate) fn take_store(&mut self) -> Option<Store> {
        self.store.take()
    }

    /// The response, echoing the request's `X-Request-ID` unless the answer sets one.
    pub(crate) fn into_response(self, request_id: Option<HeaderValue>) -> Response<Full<Bytes>> {
        let mut headers = self.headers;
        if let Some(id) = request_id {
            if !headers.contains_key("x-request-id") {
                headers.insert(HeaderName::from_static("x-request-id"), id);
            }
        }
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }
}

/// A status the server can send as a final answer.
fn final_status(status: u16) -> StatusCode {
    match StatusCode::from_u16(status) {
        Ok(s) if s.as_u16() >= 200 => s,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Answer {
        status,
        headers,
        body: body.into(),
        store: None,
        work: Duration::ZERO,
    }
}

pub(crate) fn json_answer(status: StatusCode, body: &Value) -> Answer {
    json_text(status, serde_json::to_vec(body).unwrap_or_default())
}

/// Already-serialised JSON.
pub(crate) fn json_text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    answer(status, "application/json", body)
}

fn text_answer(status: StatusCode, body: &'static str) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

pub(crate) fn detail(status: StatusCode, message: &str) -> Answer {
    json_answer(status, &json!({ "detail": message }))
}

/// FastAPI's 405, naming the methods of the first route whose path matched.
pub(crate) fn method_not_allowed(allow: &'static str) -> Answer {
    detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        .with_header(header::ALLOW, HeaderValue::from_static(allow))
}

/// What the real server sends for any database error; the connection is then closed.
pub(crate) fn internal_error() -> Answer {
    text_answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

pub(crate) fn validation_error(errors: &[FieldError]) -> Answer {
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "field": e.field(), "message": e.message() }))
        .collect();
    json_answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "detail": "Validation error", "errors": errors }),
    )
}

pub(crate) fn validation_error_one(field: &str, message: &str) -> Answer {
    validation_error(&[FieldError::new(field, message)])
}

/// The rate limiter's 429: no `Retry-After`, no rate-limit headers.
pub(crate) fn rate_limited(refusal: &str) -> Answer {
    json_text(StatusCode::TOO_MANY_REQUESTS, refusal.to_owned())
}

/// The quota's 429, a domain error.
pub(crate) fn quota_exceeded(limit: u64) -> Answer {
    json_text(StatusCode::TOO_MANY_REQUESTS, crate::quota::refusal(limit))
}

/// The real server's (or its proxy's) answer for a status, for
/// [`Fault::Status`](crate::Fault::Status).
pub(crate) fn canned(status: u16, path: &str, retry_after: Option<&str>) -> Answer {
    let status = final_status(status);
    let mut answer = match status.as_u16() {
        500 => internal_error(),
        401 => detail(status, "Invalid API key"),
        403 => detail(status, "Forbidden"),
        404 => detail(status, "Not Found"),
        405 => detail(status, "Method Not Allowed"),
        409 => detail(status, "Conflict"),
        422 => validation_error_one("body", "Injected validation error"),
        429 => {
            let per_minute = if path == TRACES_PATH {
                HOSTED_TRACES_PER_MINUTE
            } else {
                HOSTED_SCORES_PER_MINUTE
            };
            let limit = RateLimit::new(per_minute, std::time::Duration::from_secs(60));
            json_answer(
                status,
                &json!({ "error": format!("Rate limit exceeded: {}", limit.describe()) }),
            )
        }
        408 => text_answer(status, "Request Timeout"),
        502 => text_answer(status, "Bad Gateway"),
        503 => text_answer(status, "Service Unavailable"),
        504 => text_answer(status, "Gateway Timeout"),
        _ => detail(status, status.canonical_reason().unwrap_or("Error")),
    };
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        answer.headers.insert(header::RETRY_AFTER, value);
    }
    answer
}

pub(crate) fn raw(status: u16, headers: &[(String, String)], body: Bytes) -> Answer {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    Answer {
        status: final_status(status),
        headers: map,
        body,
        store: None,
        work: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses() {
        assert_eq!(final_status(0), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(final_status(101), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(final_status(1000), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(final_status(299).as_u16(), 299);
        assert_eq!(final_status(999).as_u16(), 999);
    }

    #[test]
    fn no_connection_header_even_on_500() {
        let response = internal_error().into_response(None);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::CONNECTION).is_none());
    }
}
