//! Normal handling, in the real server's order: route, method, encoding, API key, project
//! header, content type, JSON body; then the score or trace rules. The rate limit comes first
//! on the scores path (slowapi's middleware applies the default limit to every request) and
//! after validation on the traces path (a decorator on the handler applies its limit, so 401s
//! and 422s there do not count).

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::answers::{detail, rate_limited, validation_error_one, Answer};
use crate::handler::Req;
use crate::state::Shared;
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
    let route = match req.path.as_str() {
        SCORES_PATH => Route::Score,
        TRACES_PATH => Route::Trace,
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    if req.method != Method::POST {
        return detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            .with_header(header::ALLOW, HeaderValue::from_static("POST"));
    }
    if req.headers.contains_key(header::CONTENT_ENCODING) {
        return detail(
            StatusCode::BAD_REQUEST,
            "Compressed request bodies are not supported",
        );
    }
    if api_key != Some(shared.api_key().as_bytes()) {
        return detail(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    match req.headers.get("x-project-name") {
        None => return validation_error_one("x-project-name", "Field required"),
        Some(name) => {
            let valid = std::str::from_utf8(name.as_bytes()).is_ok_and(valid_project_name);
            if !valid {
                return validation_error_one(
                    "x-project-name",
                    "Project name must be 1-255 characters of letters, digits, spaces, \
                     '-', '_', '.' or \"'\", starting and ending with a letter or digit",
                );
            }
        }
    }
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
        Route::Trace => trace_body::answer(shared, fields, &body, request_id),
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
