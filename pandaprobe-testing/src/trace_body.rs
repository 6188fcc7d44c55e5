//! `POST /traces`: the real server's `TraceCreate` (pydantic), its quota, and which traces its
//! workers will fail to store.

use hyper::StatusCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::answers::{json_answer, quota_exceeded, rate_limited, validation_error, Answer};
use crate::json_fields::{contains_nul, Errors, FieldError, Fields};
use crate::score_body::COLUMN_CHARS;
use crate::state::{Shared, Store};
use crate::{StoredRecord, TRACES_PATH};

/// Longest trace or span name.
const NAME_MAX_CHARS: usize = 512;

/// Most spans one trace may carry, and one `POST /traces/{id}/spans` may add.
pub(crate) const MAX_SPANS: usize = 500;

const STATUSES: [&str; 4] = ["PENDING", "RUNNING", "COMPLETED", "ERROR"];
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

/// Fields the server keeps that could hold a U+0000 (unknown keys are dropped by pydantic,
/// UUIDs, enums and timestamps cannot hold one).
const TRACE_TEXT: [&str; 9] = [
    "name",
    "input",
    "output",
    "metadata",
    "session_id",
    "user_id",
    "tags",
    "environment",
    "release",
];
const SPAN_TEXT: [&str; 9] = [
    "name",
    "input",
    "output",
    "model",
    "token_usage",
    "metadata",
    "error",
    "model_parameters",
    "cost",
];

/// The answer to a trace whose body is a JSON object.
pub(crate) fn answer(
    shared: &Shared,
    fields: &Map<String, Value>,
    body: &Value,
    project: &str,
    request_id: Option<String>,
) -> Answer {
    let trace_id = match check(fields) {
        Ok(trace_id) => trace_id.unwrap_or_else(Uuid::new_v4),
        Err(errors) => return validation_error(&errors),
    };
    // The traces limit is a decorator on the handler: it counts only valid, authorised calls.
    let api_key = Some(shared.api_key().as_bytes());
    if let Some(refusal) = shared.rate_limited(TRACES_PATH, api_key) {
        return rate_limited(refusal);
    }
    if !shared.quota().take() {
        return quota_exceeded(shared.quota().limit_or_hobby());
    }
    let spans = fields.get("spans").and_then(Value::as_array);
    let response = json!({
        "trace_id": trace_id.to_string(),
        "task_id": Uuid::new_v4().to_string(),
    });
    json_answer(StatusCode::ACCEPTED, &response).storing(Store::Trace {
        record: StoredRecord {
            id: trace_id,
            request_id,
            body: body.clone(),
            stored_at: None,
        },
        project: project.to_owned(),
        spans: spans.map_or(0, Vec::len),
        storable: !has_nul(fields, spans),
    })
}

/// PostgreSQL refuses U+0000 in text and JSON: such a trace is accepted, then never stored.
fn has_nul(fields: &Map<String, Value>, spans: Option<&Vec<Value>>) -> bool {
    let in_fields = |map: &Map<String, Value>, names: &[&str]| {
        names
            .iter()
            .any(|name| map.get(*name).is_some_and(contains_nul))
    };
    in_fields(fields, &TRACE_TEXT) || spans.into_iter().flatten().any(span_has_nul)
}

/// Whether a U+0000 is in a field of the span that the server keeps.
pub(crate) fn span_has_nul(span: &Value) -> bool {
    span.as_object().is_some_and(|span| {
        SPAN_TEXT
            .iter()
            .any(|name| span.get(*name).is_some_and(contains_nul))
    })
}

/// Validates a trace; `Ok` carries its `trace_id` when it has one.
fn check(map: &Map<String, Value>) -> Result<Option<Uuid>, Vec<FieldError>> {
    let mut errors = Errors::default();
    let fields = Fields::new(map, "");
    let trace_id = fields.uuid(&mut errors, "trace_id", true);
    fields.string(&mut errors, "name", 1, NAME_MAX_CHARS);
    fields.timestamp(&mut errors, "started_at", true);
    fields.timestamp(&mut errors, "ended_at", false);
    fields.enumeration(&mut errors, "status", &STATUSES, "COMPLETED");
    fields.object(&mut errors, "metadata");
    for field in ["session_id", "user_id", "environment", "release"] {
        fields.optional_string(&mut errors, field, COLUMN_CHARS);
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
        Some(Value::Array(spans)) if spans.len() > MAX_SPANS => {
            errors.add(
                "spans",
                format!("List should have at most {MAX_SPANS} items"),
            );
        }
        Some(Value::Array(spans)) => {
            for (i, span) in spans.iter().enumerate() {
                let at = format!("spans[{i}]");
                let prefix = format!("{at}.");
                check_span(
                    &mut errors,
                    span,
                    &at,
                    prefix,
                    "Input should be a valid dictionary",
                );
            }
        }
        Some(_) => errors.add("spans", "Input should be a valid list"),
    }
    errors.finish(trace_id)
}

/// Validates one span: `at` names it in errors when it is not an object (with
/// `not_object`), `prefix` is put before the names of its fields.
pub(crate) fn check_span(
    errors: &mut Errors,
    span: &Value,
    at: &str,
    prefix: String,
    not_object: &str,
) {
    let Value::Object(map) = span else {
        errors.add(at, not_object);
        return;
    };
    let fields = Fields::new(map, prefix);
    fields.uuid(errors, "span_id", false);
    fields.uuid(errors, "parent_span_id", true);
    fields.string(errors, "name", 1, NAME_MAX_CHARS);
    fields.enumeration(errors, "kind", &SPAN_KINDS, "OTHER");
    fields.enumeration(errors, "status", &SPAN_STATUSES, "UNSET");
    fields.timestamp(errors, "started_at", true);
    fields.timestamp(errors, "ended_at", false);
    fields.timestamp(errors, "completion_start_time", false);
    fields.optional_string(errors, "model", COLUMN_CHARS);
    fields.optional_string(errors, "error", usize::MAX);
    for field in ["metadata", "token_usage", "model_parameters", "cost"] {
        fields.object(errors, field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nul_in(body: Value) -> bool {
        let Value::Object(map) = body else {
            return false;
        };
        let spans = map.get("spans").and_then(Value::as_array);
        has_nul(&map, spans)
    }

    #[test]
    fn nul_in_kept_fields_only() {
        assert!(!nul_in(json!({"name": "t", "tags": ["a"]})));
        assert!(nul_in(json!({"name": "t\u{0}"})));
        assert!(nul_in(json!({"name": "t", "tags": ["a", "\u{0}"]})));
        assert!(nul_in(json!({"name": "t", "input": {"k\u{0}": 1}})));
        assert!(nul_in(json!({"name": "t", "spans": [{"error": "x\u{0}"}]})));
        assert!(nul_in(
            json!({"name": "t", "spans": [{}, {"cost": {"\u{0}": 1.0}}]})
        ));
        // Unknown keys are dropped by the server, so they cannot fail the insert.
        assert!(!nul_in(json!({"name": "t", "junk": "\u{0}"})));
        assert!(!nul_in(json!({"name": "t", "spans": [{"junk": "\u{0}"}]})));
    }
}
