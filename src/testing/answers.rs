//! The answers the server sends: the real server's bodies for each status, the answers of
//! injected faults, and how an answer becomes an HTTP response.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::contract::FieldError;
use super::state::Store;
use super::TRACES_PATH;

/// An answer before it becomes a response; `store` is what answering it stores.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    body: Bytes,
    pub(super) store: Option<Store>,
}

pub(super) type HttpResponse = Response<Full<Bytes>>;

pub(super) fn into_response(answer: Answer, request_id: Option<HeaderValue>) -> HttpResponse {
    let mut headers = answer.headers;
    if let Some(id) = request_id {
        if !headers.contains_key("x-request-id") {
            headers.insert(HeaderName::from_static("x-request-id"), id);
        }
    }
    if answer.status == StatusCode::INTERNAL_SERVER_ERROR {
        // The real server drops the connection after a 500.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = headers;
    response
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
    }
}

pub(super) fn json_answer(status: StatusCode, body: &Value) -> Answer {
    answer(
        status,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

fn text_answer(status: StatusCode, body: &'static str) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

pub(super) fn detail(status: StatusCode, message: &str) -> Answer {
    json_answer(status, &json!({ "detail": message }))
}

pub(super) fn internal_error() -> Answer {
    text_answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

pub(super) fn validation_error(errors: &[FieldError]) -> Answer {
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "field": e.field, "message": e.message }))
        .collect();
    json_answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "detail": "Validation error", "errors": errors }),
    )
}

pub(super) fn validation_error_one(field: &str, message: &str) -> Answer {
    validation_error(&[FieldError::new(field, message)])
}

/// The real server's (or its proxy's) answer for a status, for
/// [`Fault::Status`](super::Fault::Status).
pub(super) fn canned(status: u16, path: &str, retry_after: Option<&str>) -> Answer {
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
            let per_minute = if path == TRACES_PATH { 100 } else { 200 };
            json_answer(
                status,
                &json!({ "error": format!("Rate limit exceeded: {per_minute} per 1 minute") }),
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

pub(super) fn raw(status: u16, headers: &[(String, String)], body: Bytes) -> Answer {
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
}
