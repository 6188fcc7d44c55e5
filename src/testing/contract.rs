//! Normal handling: the real server's ingestion contract for scores and traces (routes, headers,
//! body validation and what each accepted request stores).

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::answers::{
    detail, internal_error, json_answer, validation_error, validation_error_one, Answer,
};
use super::server::Req;
use super::state::{Shared, Store};
use super::{StoredRecord, SCORES_PATH, TRACES_PATH};

/// Longest name and value a score may have before the real server's column overflows (500).
const SCORE_COLUMN_CHARS: usize = 255;

/// Longest trace or span name.
const NAME_MAX_CHARS: usize = 512;

/// Most spans one trace may carry.
const MAX_SPANS: usize = 500;

enum Route {
    Score,
    Trace,
}

pub(super) fn answer_normally(shared: &Shared, req: &Req) -> Answer {
    let route = match req.path.as_str() {
        SCORES_PATH => Route::Score,
        TRACES_PATH => Route::Trace,
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    if req.method != Method::POST {
        let mut answer = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        answer
            .headers
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return answer;
    }
    if req.headers.contains_key(header::CONTENT_ENCODING) {
        return detail(
            StatusCode::BAD_REQUEST,
            "Compressed request bodies are not supported",
        );
    }
    let key_ok = req
        .headers
        .get("x-api-key")
        .is_some_and(|k| k.as_bytes() == shared.api_key.as_bytes());
    if !key_ok {
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
        Route::Score => match check_score(fields) {
            Err(errors) => validation_error(&errors),
            Ok(score) => {
                if score.name.chars().count() > SCORE_COLUMN_CHARS
                    || score.value.chars().count() > SCORE_COLUMN_CHARS
                    || (shared.require_known_traces && !shared.trace_is_stored(&score.trace_id))
                {
                    return internal_error();
                }
                let id = Uuid::new_v4();
                let response = json!({
                    "id": id.to_string(),
                    "trace_id": score.trace_id.to_string(),
                    "name": score.name,
                    "value": score.value,
                    "data_type": score.data_type,
                    "source": score.source,
                    "reason": score.reason,
                    "metadata": score.metadata,
                    "created_at": now_rfc3339(),
                });
                let mut answer = json_answer(StatusCode::CREATED, &response);
                answer.store = Some(Store::Score(StoredRecord {
                    id,
                    request_id,
                    body,
                }));
                answer
            }
        },
        Route::Trace => match check_trace(fields) {
            Err(errors) => validation_error(&errors),
            Ok(trace_id) => {
                let trace_id = trace_id.unwrap_or_else(Uuid::new_v4);
                let response = json!({
                    "trace_id": trace_id.to_string(),
                    "task_id": Uuid::new_v4().to_string(),
                });
                let mut answer = json_answer(StatusCode::ACCEPTED, &response);
                answer.store = Some(Store::Trace {
                    trace_id,
                    record: StoredRecord {
                        id: trace_id,
                        request_id,
                        body,
                    },
                });
                answer
            }
        },
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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

pub(super) struct FieldError {
    pub(super) field: String,
    pub(super) message: String,
}

impl FieldError {
    pub(super) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects every validation error of a body, like pydantic does.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn finish<T>(self, ok: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(self.0)
        }
    }
}

/// A score that passed validation; length and foreign-key checks (500s) come after.
struct Score {
    trace_id: Uuid,
    name: String,
    value: String,
    data_type: &'static str,
    source: &'static str,
    reason: Option<String>,
    metadata: Value,
}

const DATA_TYPES: [&str; 3] = ["NUMERIC", "BOOLEAN", "CATEGORICAL"];
const SCORE_SOURCES: [&str; 2] = ["PROGRAMMATIC", "ANNOTATION"];
const TRACE_STATUSES: [&str; 4] = ["PENDING", "RUNNING", "COMPLETED", "ERROR"];
const SPAN_KINDS: [&str; 7] = [
    "AGENT",
    "TOOL",
    "LLM",
    "RETRIEVER",
    "CHAIN",
    "EMBEDDING",
    "OTHER",
];
const SPAN_STATUSES: [&str; 3] = ["UNSET", "OK", "ERROR"];

fn enum_message(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    format!("Input should be one of {}", quoted.join(", "))
}

/// An enum field: absent gives `default`, anything but one of `allowed` is an error.
fn check_enum(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    allowed: &[&'static str],
    default: &'static str,
) -> Option<&'static str> {
    match fields.get(field) {
        None => Some(default),
        Some(Value::String(s)) => {
            let found = allowed.iter().find(|a| **a == s.as_str()).copied();
            if found.is_none() {
                errors.add(format!("{prefix}{field}"), enum_message(allowed));
            }
            found
        }
        Some(_) => {
            errors.add(format!("{prefix}{field}"), enum_message(allowed));
            None
        }
    }
}

/// A required string with a length range in characters.
fn check_string(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    min: usize,
    max: usize,
) -> Option<String> {
    let name = format!("{prefix}{field}");
    match fields.get(field) {
        None => {
            errors.add(name, "Field required");
            None
        }
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n < min {
                errors.add(name, format!("String should have at least {min} character"));
                None
            } else if n > max {
                errors.add(name, format!("String should have at most {max} characters"));
                None
            } else {
                Some(s.clone())
            }
        }
        Some(_) => {
            errors.add(name, "Input should be a valid string");
            None
        }
    }
}

/// An optional string (`null` allowed) of at most `max` characters.
fn check_optional_string(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    max: usize,
) {
    match fields.get(field) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                errors.add(
                    format!("{prefix}{field}"),
                    format!("String should have at most {max} characters"),
                );
            }
        }
        Some(_) => errors.add(format!("{prefix}{field}"), "Input should be a valid string"),
    }
}

/// An optional object: absent is fine, `null` and anything else that is not an object is not.
fn check_object(errors: &mut Errors, fields: &Map<String, Value>, field: &str, prefix: &str) {
    match fields.get(field) {
        None | Some(Value::Object(_)) => {}
        Some(_) => errors.add(
            format!("{prefix}{field}"),
            "Input should be a valid dictionary",
        ),
    }
}

/// An optional UUID (`null` allowed when `nullable`).
fn check_optional_uuid(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    nullable: bool,
) -> Option<Uuid> {
    match fields.get(field) {
        None => None,
        Some(Value::Null) if nullable => None,
        Some(value) => {
            let parsed = value.as_str().and_then(|s| Uuid::parse_str(s).ok());
            if parsed.is_none() {
                errors.add(format!("{prefix}{field}"), "Input should be a valid UUID");
            }
            parsed
        }
    }
}

/// A timestamp field, required or optional (`null` allowed when optional).
fn check_timestamp(
    errors: &mut Errors,
    fields: &Map<String, Value>,
    field: &str,
    prefix: &str,
    required: bool,
) {
    let ok = match fields.get(field) {
        None => {
            if required {
                errors.add(format!("{prefix}{field}"), "Field required");
            }
            return;
        }
        Some(Value::Null) => !required,
        Some(Value::Number(_)) => true,
        Some(Value::String(s)) => looks_like_timestamp(s),
        Some(_) => false,
    };
    if !ok {
        errors.add(
            format!("{prefix}{field}"),
            "Input should be a valid datetime",
        );
    }
}

fn check_score(fields: &Map<String, Value>) -> Result<Score, Vec<FieldError>> {
    let mut errors = Errors::default();
    let trace_id = match fields.get("trace_id") {
        None => {
            errors.add("trace_id", "Field required");
            None
        }
        Some(_) => check_optional_uuid(&mut errors, fields, "trace_id", "", false),
    };
    // Overlong names and values are the database's problem (500), checked later.
    let name = check_string(&mut errors, fields, "name", "", 1, usize::MAX);
    let value = check_string(&mut errors, fields, "value", "", 0, usize::MAX);
    let data_type = check_enum(&mut errors, fields, "data_type", "", &DATA_TYPES, "NUMERIC");
    let source = check_enum(
        &mut errors,
        fields,
        "source",
        "",
        &SCORE_SOURCES,
        "ANNOTATION",
    );
    let reason = match fields.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.add("reason", "Input should be a valid string");
            None
        }
    };
    check_object(&mut errors, fields, "metadata", "");
    if let (Some(value), Some(data_type)) = (&value, data_type) {
        match data_type {
            "NUMERIC" => {
                let in_range = value
                    .trim()
                    .parse::<f64>()
                    .is_ok_and(|v| (0.0..=1.0).contains(&v));
                if !in_range {
                    errors.add(
                        "value",
                        "NUMERIC value must be a number between 0.0 and 1.0",
                    );
                }
            }
            "BOOLEAN" => {
                let v = value.trim();
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                    errors.add("value", "BOOLEAN value must be 'true' or 'false'");
                }
            }
            _ => {}
        }
    }
    let (Some(trace_id), Some(name), Some(value), Some(data_type), Some(source)) =
        (trace_id, name, value, data_type, source)
    else {
        return Err(errors.0);
    };
    let metadata = fields
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    errors.finish(Score {
        trace_id,
        name,
        value,
        data_type,
        source,
        reason,
        metadata,
    })
}

/// Validates a trace; `Ok` carries its `trace_id` when it has one.
fn check_trace(fields: &Map<String, Value>) -> Result<Option<Uuid>, Vec<FieldError>> {
    let mut errors = Errors::default();
    let trace_id = check_optional_uuid(&mut errors, fields, "trace_id", "", true);
    check_string(&mut errors, fields, "name", "", 1, NAME_MAX_CHARS);
    check_timestamp(&mut errors, fields, "started_at", "", true);
    check_timestamp(&mut errors, fields, "ended_at", "", false);
    check_enum(
        &mut errors,
        fields,
        "status",
        "",
        &TRACE_STATUSES,
        "COMPLETED",
    );
    check_object(&mut errors, fields, "metadata", "");
    for field in ["session_id", "user_id", "environment", "release"] {
        check_optional_string(&mut errors, fields, field, "", SCORE_COLUMN_CHARS);
    }
    match fields.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tags)) => {
            for (i, tag) in tags.iter().enumerate() {
                if !tag.is_string() {
                    errors.add(format!("tags[{i}]"), "Input should be a valid string");
                }
            }
        }
        Some(_) => errors.add("tags", "Input should be a valid list"),
    }
    match fields.get("spans") {
        None | Some(Value::Null) => {}
        Some(Value::Array(spans)) => {
            if spans.len() > MAX_SPANS {
                errors.add(
                    "spans",
                    format!("List should have at most {MAX_SPANS} items"),
                );
            } else {
                for (i, span) in spans.iter().enumerate() {
                    check_span(&mut errors, span, i);
                }
            }
        }
        Some(_) => errors.add("spans", "Input should be a valid list"),
    }
    errors.finish(trace_id)
}

fn check_span(errors: &mut Errors, span: &Value, i: usize) {
    let prefix = format!("spans[{i}].");
    let Value::Object(fields) = span else {
        errors.add(format!("spans[{i}]"), "Input should be a valid dictionary");
        return;
    };
    check_optional_uuid(errors, fields, "span_id", &prefix, false);
    check_optional_uuid(errors, fields, "parent_span_id", &prefix, true);
    check_string(errors, fields, "name", &prefix, 1, NAME_MAX_CHARS);
    check_enum(errors, fields, "kind", &prefix, &SPAN_KINDS, "OTHER");
    check_enum(errors, fields, "status", &prefix, &SPAN_STATUSES, "UNSET");
    check_timestamp(errors, fields, "started_at", &prefix, true);
    check_timestamp(errors, fields, "ended_at", &prefix, false);
    check_timestamp(errors, fields, "completion_start_time", &prefix, false);
    check_optional_string(errors, fields, "model", &prefix, SCORE_COLUMN_CHARS);
    check_optional_string(errors, fields, "error", &prefix, usize::MAX);
    for field in ["metadata", "token_usage", "model_parameters", "cost"] {
        check_object(errors, fields, field, &prefix);
    }
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH[:]MM]`: what pydantic takes for an RFC 3339
/// timestamp (a missing offset is accepted, as pydantic does).
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Option<u32> {
        let digits = b.get(at..at + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
        )
    };
    let is = |at: usize, c: u8| b.get(at) == Some(&c);
    let date_ok = num(0, 4).is_some()
        && is(4, b'-')
        && num(5, 2).is_some_and(|m| (1..=12).contains(&m))
        && is(7, b'-')
        && num(8, 2).is_some_and(|d| (1..=31).contains(&d));
    let time_ok = matches!(b.get(10), Some(b'T' | b't' | b' '))
        && num(11, 2).is_some_and(|h| h <= 23)
        && is(13, b':')
        && num(14, 2).is_some_and(|m| m <= 59);
    if !date_ok || !time_ok {
        return false;
    }
    let mut i = 16;
    if is(i, b':') {
        if num(i + 1, 2).is_none_or(|sec| sec > 59) {
            return false;
        }
        i += 3;
        if is(i, b'.') || is(i, b',') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return false;
            }
        }
    }
    match b.get(i) {
        None => true,
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            let hours = num(i + 1, 2).is_some_and(|h| h <= 23);
            let minutes = match b.len().checked_sub(i + 3) {
                Some(0) => true,
                Some(2) => num(i + 3, 2).is_some_and(|m| m <= 59),
                Some(3) => is(i + 3, b':') && num(i + 4, 2).is_some_and(|m| m <= 59),
                _ => false,
            };
            hours && minutes
        }
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        for ok in [
            "2026-11-29T03:27:52.093623+00:00",
            "2026-11-29T03:27:52Z",
            "2026-11-29t03:27:52z",
            "2026-11-29 03:27:52",
            "2026-11-29T03:27",
            "2026-11-29T03:27:52.1-05:30",
            "2026-11-29T03:27:52+0530",
            "2026-11-29T03:27:52+05",
        ] {
            assert!(looks_like_timestamp(ok), "{ok}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-11-29",
            "2026-13-29T03:27:52Z",
            "2026-11-29T24:00:00Z",
            "2026-11-29T03:27:52.Z",
            "2026-11-29T03:27:52+",
            "2026-11-29T03:27:52+05:3",
            "2026-11-29T03:27:52Zjunk",
            "2026-11-29T03:27:52+05:30:00",
            "2026-11-29T03:27:5",
            "２０２６-11-29T03:27:52Z",
        ] {
            assert!(!looks_like_timestamp(bad), "{bad}");
        }
    }

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
