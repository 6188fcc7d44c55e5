//! Normal handling, in the real server's order: route, method, encoding, API key, project
//! header, content type, JSON body; then the score or trace rules. The rate limit comes first
//! on the scores path (slowapi's middleware applies the default limit to every request) and
//! after validation on the traces path (a decorator on the handler applies its limit, so 401s
//! and 422s there do not count).
//!
//! Under `/traces/{trace_id}` the default limit counts every request per concrete path, then:
//! route, method, encoding; for spans the JSON decoding (FastAPI reads the body before it
//! resolves dependencies); API key, project header; the trace id and the body, validated
//! together; the trace's existence in the request's project.

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::answers::{
    detail, internal_error, json_text, method_not_allowed, rate_limited, validation_error,
    validation_error_one, Answer,
};
use crate::records::Req;
use crate::span_body::{self, decode_error_position, Body};
use crate::state::Shared;
use crate::trace_paths::{self, TraceRoute};
use crate::{score_body, trace_body, SCORES_PATH, TRACES_PATH};

enum Route {
    Score,
    Trace,
}

pub(crate) fn answer_normally(shared: &Shared, req: &Req) -> Answer {
    let api_key = req.headers.get("x-api-key").map(HeaderValue::as_bytes);
    if req.path != TRACES_PATH {
        if let Some(refusal) = shared.rate_limited(&req.path, api_key) {
            return rate_limited(refusal);
        }
    }
    if let Some(route) = trace_paths::route(&req.path) {
        return answer_trace_route(shared, req, route, api_key);
    }
    let route = match req.path.as_str() {
        SCORES_PATH => Route::Score,
        TRACES_PATH => Route::Trace,
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    if req.method != Method::POST {
        return method_not_allowed("POST");
    }
    if let Some(refusal) = compressed(req) {
        return refusal;
    }
    let project = match authorise(shared, req, api_key) {
        Ok(project) => project,
        Err(refusal) => return *refusal,
    };
    if let Some(content_type) = req.headers.get(header::CONTENT_TYPE) {
        if !is_json_content_type(content_type.as_bytes()) {
            return validation_error_one("body", "Input should be a valid dictionary");
        }
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(body) => body,
        Err(_) => return validation_error_one("body", "JSON decode error"),
    };
    let Value::Object(fields) = &body else {
        return validation_error_one("body", "Input should be a valid dictionary");
    };
    let request_id = req
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match route {
        Route::Score => score_body::answer(shared, fields, &body, request_id),
        Route::Trace => trace_body::answer(shared, fields, &body, project, request_id),
    }
}

fn compressed(req: &Req) -> Option<Answer> {
    req.headers.contains_key(header::CONTENT_ENCODING).then(|| {
        detail(
            StatusCode::BAD_REQUEST,
            "Compressed request bodies are not supported",
        )
    })
}

/// The API key and the project header; the project name when both are good.
fn authorise<'r>(
    shared: &Shared,
    req: &'r Req,
    api_key: Option<&[u8]>,
) -> Result<&'r str, Box<Answer>> {
    if api_key != Some(shared.api_key().as_bytes()) {
        return Err(Box::new(detail(
            StatusCode::UNAUTHORIZED,
            "Invalid API key",
        )));
    }
    let Some(name) = req.headers.get("x-project-name") else {
        return Err(Box::new(validation_error_one(
            "x-project-name",
            "Field required",
        )));
    };
    match std::str::from_utf8(name.as_bytes()) {
        Ok(name) if valid_project_name(name) => Ok(name),
        _ => Err(Box::new(validation_error_one(
            "x-project-name",
            "Project name must be 1-255 characters of letters, digits, spaces, \
             '-', '_', '.' or \"'\", starting and ending with a letter or digit",
        ))),
    }
}

/// `GET /traces/{trace_id}` and `POST /traces/{trace_id}/spans`.
fn answer_trace_route(
    shared: &Shared,
    req: &Req,
    route: TraceRoute<'_>,
    api_key: Option<&[u8]>,
) -> Answer {
    match route {
        TraceRoute::Trace(segment) => {
            match req.method {
                Method::GET => {}
                // Real routes this server does not simulate.
                Method::PATCH | Method::DELETE => return method_not_allowed("GET"),
                // The first route on this path is `PATCH /traces/{trace_id}`.
                _ => return method_not_allowed("PATCH"),
            }
            if let Some(refusal) = compressed(req) {
                return refusal;
            }
            let project = match authorise(shared, req, api_key) {
                Ok(project) => project,
                Err(refusal) => return *refusal,
            };
            let trace_id = match trace_paths::trace_id(segment) {
                Ok(id) => id,
                Err(e) => return validation_error(&[e]),
            };
            match shared.read_trace(&trace_id, Some(project)) {
                None => detail(
                    StatusCode::NOT_FOUND,
                    &format!("Trace {trace_id} not found."),
                ),
                Some(read) if read.fails => internal_error(),
                Some(read) => json_text(StatusCode::OK, read.doc.to_json()),
            }
        }
        TraceRoute::Spans(segment) => {
            if req.method != Method::POST {
                return method_not_allowed("POST");
            }
            if let Some(refusal) = compressed(req) {
                return refusal;
            }
            let declared_json = req
                .headers
                .get(header::CONTENT_TYPE)
                .is_none_or(|t| is_json_content_type(t.as_bytes()));
            let body = if req.body.is_empty() {
                Body::Missing
            } else if !declared_json {
                Body::NotJson
            } else {
                match serde_json::from_slice(&req.body) {
                    Ok(value) => Body::Json(value),
                    Err(e) => {
                        let at = decode_error_position(&req.body, &e).to_string();
                        return validation_error_one(&at, "JSON decode error");
                    }
                }
            };
            let project = match authorise(shared, req, api_key) {
                Ok(project) => project,
                Err(refusal) => return *refusal,
            };
            span_body::answer(shared, trace_paths::trace_id(segment), body, project)
        }
    }
}

/// `application/json` or any `application/*+json`, like FastAPI.
fn is_json_content_type(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

fn valid_project_name(name: &str) -> bool {
    let count = name.chars().count();
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '\'');
    (1..=255).contains(&count)
        && name.chars().next().is_some_and(char::is_alphanumeric)
        && name.chars().next_back().is_some_and(char::is_alphanumeric)
        && name.chars().all(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names() {
        for ok in ["a", "my-project", "My Project v1.2", "o'neil_9", "é1"] {
            assert!(valid_project_name(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in ["", " a", "a ", "-a", "a-", "a/b", "a\tb", long.as_str()] {
            assert!(!valid_project_name(bad), "{bad}");
        }
        assert!(valid_project_name(&"a".repeat(255)));
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(is_json_content_type(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
        ] {
            assert!(!is_json_content_type(bad.as_bytes()), "{bad}");
        }
    }
}
