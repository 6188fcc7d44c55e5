//! `POST /traces/{trace_id}/spans`: a JSON list of 1-500 `SpanCreate`, upserted onto a stored
//! trace in one synchronous transaction that takes its time per span.

use hyper::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::answers::{detail, internal_error, json_answer, validation_error, Answer};
use crate::json_fields::{Errors, FieldError};
use crate::state::{Shared, Store};
use crate::trace_body::{check_span, span_has_nul, MAX_SPANS};
use crate::trace_db::TraceDb;

/// The request body as FastAPI hands it to validation.
pub(crate) enum Body {
    /// An empty body.
    Missing,
    /// Not declared as JSON: the bytes, which are no list.
    NotJson,
    Json(Value),
}

/// The answer to a request that passed authentication.
pub(crate) fn answer(
    shared: &Shared,
    trace_id: Result<Uuid, FieldError>,
    body: Body,
    project: &str,
) -> Answer {
    let mut errors = Errors::default();
    let trace_id = match trace_id {
        Ok(id) => Some(id),
        Err(e) => {
            errors.add(e.field(), e.message());
            None
        }
    };
    let spans = check(&mut errors, body);
    let (Some(trace_id), Some(mut spans), true) = (trace_id, spans, errors.is_empty()) else {
        return validation_error(&errors.into_vec());
    };
    if !shared.has_trace(&trace_id, project) {
        return detail(
            StatusCode::NOT_FOUND,
            &format!("Trace {trace_id} not found."),
        );
    }
    // PostgreSQL refuses U+0000; the transaction is rolled back.
    if spans.iter().any(span_has_nul) {
        return internal_error();
    }
    let span_ids: Vec<String> = spans
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .map(|span| {
            let id = TraceDb::span_id_of(span);
            span.insert("span_id".to_owned(), Value::String(id.to_string()));
            id.to_string()
        })
        .collect();
    let work = shared
        .span_write_time()
        .saturating_mul(u32::try_from(spans.len()).unwrap_or(u32::MAX));
    json_answer(StatusCode::CREATED, &json!({ "span_ids": span_ids }))
        .storing(Store::Spans { trace_id, spans })
        .after(work)
}

/// `Body(..., min_length=1, max_length=500)` of `list[SpanCreate]`; the spans when valid.
fn check(errors: &mut Errors, body: Body) -> Option<Vec<Value>> {
    let spans = match body {
        Body::Missing => {
            errors.add("", "Field required");
            return None;
        }
        Body::Json(Value::Array(spans)) => spans,
        Body::NotJson | Body::Json(_) => {
            errors.add("", "Input should be a valid list");
            return None;
        }
    };
    if spans.is_empty() || spans.len() > MAX_SPANS {
        let message = if spans.is_empty() {
            "List should have at least 1 item after validation, not 0".to_owned()
        } else {
            format!(
                "List should have at most {MAX_SPANS} items after validation, not {}",
                spans.len()
            )
        };
        errors.add("", message);
        return None;
    }
    for (i, span) in spans.iter().enumerate() {
        let at = i.to_string();
        let prefix = format!("{at} -> ");
        check_span(
            errors,
            span,
            &at,
            prefix,
            "Input should be a valid dictionary or object to extract fields from",
        );
    }
    Some(spans)
}

/// The field FastAPI names in a JSON decode error: the character offset Python's `json`
/// stopped at (taken from serde_json's line and column; exact for the common cases).
pub(crate) fn decode_error_position(body: &[u8], error: &serde_json::Error) -> usize {
    let text = String::from_utf8_lossy(body);
    let line_start: usize = text
        .split_inclusive('\n')
        .take(error.line().saturating_sub(1))
        .map(|line| line.chars().count())
        .sum();
    let column = if error.is_eof() {
        error.column()
    } else {
        error.column().saturating_sub(1)
    };
    line_start + column
}

#[cfg(test)]
fn fields_of(errors: Errors) -> Vec<(String, String)> {
    errors
        .into_vec()
        .into_iter()
        .map(|e| (e.field().to_owned(), e.message().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(body: Value) -> Vec<(String, String)> {
        let mut errors = Errors::default();
        check(&mut errors, Body::Json(body));
        fields_of(errors)
    }

    #[test]
    fn list_rules_as_the_real_server_words_them() {
        let span = json!({"name": "a", "started_at": "2026-01-01T00:00:00Z"});
        assert!(errors_of(json!([span])).is_empty());
        assert_eq!(
            errors_of(json!([])),
            [(
                String::new(),
                "List should have at least 1 item after validation, not 0".to_owned()
            )]
        );
        assert_eq!(
            errors_of(Value::Array(vec![span.clone(); 501])),
            [(
                String::new(),
                "List should have at most 500 items after validation, not 501".to_owned()
            )]
        );
        assert_eq!(
            errors_of(json!({"a": 1})),
            [(String::new(), "Input should be a valid list".to_owned())]
        );
        let fields: Vec<String> =
            errors_of(json!([span, {"started_at": "2026-01-01T00:00:00Z"}, 5]))
                .into_iter()
                .map(|(field, _)| field)
                .collect();
        assert_eq!(fields, ["1 -> name", "2"]);
        let mut errors = Errors::default();
        check(&mut errors, Body::Missing);
        assert_eq!(
            fields_of(errors),
            [(String::new(), "Field required".to_owned())]
        );
    }

    #[test]
    fn decode_error_positions_like_python() {
        let position = |body: &str| {
            serde_json::from_str::<Value>(body)
                .err()
                .map(|e| decode_error_position(body.as_bytes(), &e))
        };
        // Measured: `[{"name":"a",` gives field "13".
        assert_eq!(position(r#"[{"name":"a","#), Some(13));
        assert_eq!(position("[1,]"), Some(3));
        assert_eq!(position("[\n1,x]"), Some(4));
    }
}
