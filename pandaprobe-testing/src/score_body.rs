//! `POST /evaluations/trace-scores`: the real server's `CreateTraceScoreRequest` (pydantic)
//! and what its database then refuses.

use hyper::StatusCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::answers::{internal_error, json_answer, validation_error, Answer};
use crate::json_fields::{contains_nul, Errors, Fields};
use crate::python_float;
use crate::state::{Shared, Store};
use crate::StoredRecord;

/// The database column size of a score's name and value: longer ones fail with a 500.
pub(crate) const COLUMN_CHARS: usize = 255;

const DATA_TYPES: [&str; 3] = ["NUMERIC", "BOOLEAN", "CATEGORICAL"];
const SOURCES: [&str; 2] = ["PROGRAMMATIC", "ANNOTATION"];

/// A score whose fields are valid.
struct Score<'a> {
    trace_id: Uuid,
    name: &'a str,
    value: &'a str,
    data_type: &'static str,
    source: &'static str,
    reason: Option<&'a str>,
    metadata: Option<&'a Value>,
}

/// The answer to a score whose body is a JSON object.
pub(crate) fn answer(
    shared: &Shared,
    fields: &Map<String, Value>,
    body: &Value,
    request_id: Option<String>,
) -> Answer {
    let score = match check(fields) {
        Ok(score) => score,
        Err(errors) => return validation_error(&errors.into_vec()),
    };
    let too_long = |s: &str| s.chars().count() > COLUMN_CHARS;
    let has_nul = [Some(score.name), Some(score.value), score.reason]
        .iter()
        .flatten()
        .any(|s| s.contains('\0'))
        || score.metadata.is_some_and(contains_nul);
    if too_long(score.name)
        || too_long(score.value)
        || has_nul
        || (shared.require_known_traces() && shared.trace_stored_at(&score.trace_id).is_none())
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
        "metadata": score.metadata.cloned().unwrap_or_else(|| json!({})),
        "created_at": now_rfc3339(),
    });
    json_answer(StatusCode::CREATED, &response).storing(Store::Score(StoredRecord {
        id,
        request_id,
        body: body.clone(),
        stored_at: None,
    }))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The fields, then (only when they are all valid, like a pydantic `after` model validator)
/// the value against its data type.
fn check(map: &Map<String, Value>) -> Result<Score<'_>, Errors> {
    let mut errors = Errors::default();
    let fields = Fields::new(map, "");
    let trace_id = match fields.get("trace_id") {
        None => {
            errors.add("trace_id", "Field required");
            None
        }
        Some(_) => fields.uuid(&mut errors, "trace_id", false),
    };
    let name = fields.string(&mut errors, "name", 0, usize::MAX);
    let value = fields.string(&mut errors, "value", 0, usize::MAX);
    let data_type = fields.enumeration(&mut errors, "data_type", &DATA_TYPES, "NUMERIC");
    let source = fields.enumeration(&mut errors, "source", &SOURCES, "ANNOTATION");
    let reason = fields.optional_string(&mut errors, "reason", usize::MAX);
    fields.object(&mut errors, "metadata");
    let (Some(trace_id), Some(name), Some(value), Some(data_type), Some(source), true) =
        (trace_id, name, value, data_type, source, errors.is_empty())
    else {
        return Err(errors);
    };
    if let Some(message) = value_error(value, data_type) {
        errors.add("value", message);
        return Err(errors);
    }
    Ok(Score {
        trace_id,
        name,
        value,
        data_type,
        source,
        reason,
        metadata: fields.get("metadata"),
    })
}

/// The backend's `validate_score_value`, with pydantic's `Value error, ` prefix.
fn value_error(value: &str, data_type: &str) -> Option<&'static str> {
    match data_type {
        "NUMERIC" => match python_float::parse(value) {
            None => Some("Value error, NUMERIC score must be a valid number"),
            Some(v) if !(0.0..=1.0).contains(&v) => {
                Some("Value error, NUMERIC score must be in [0.0, 1.0]")
            }
            Some(_) => None,
        },
        // Python's `value.lower() in ("true", "false")`: no stripping. No non-ASCII character
        // lowers to these letters, so an ASCII comparison is exact.
        "BOOLEAN" => (!value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false"))
            .then_some("Value error, BOOLEAN score must be 'true' or 'false'"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rules() {
        assert_eq!(value_error("0.5", "NUMERIC"), None);
        assert_eq!(value_error(" 0.2_5 ", "NUMERIC"), None);
        assert_eq!(value_error("-0", "NUMERIC"), None);
        assert!(value_error("1.5", "NUMERIC").is_some_and(|m| m.contains("[0.0, 1.0]")));
        assert!(value_error("nan", "NUMERIC").is_some_and(|m| m.contains("[0.0, 1.0]")));
        assert!(value_error("x", "NUMERIC").is_some_and(|m| m.contains("valid number")));
        assert_eq!(value_error("TrUe", "BOOLEAN"), None);
        assert!(value_error(" true", "BOOLEAN").is_some());
        assert!(value_error("yes", "BOOLEAN").is_some());
        assert_eq!(value_error("", "CATEGORICAL"), None);
    }

    #[test]
    fn value_is_checked_only_when_every_field_is_valid() {
        let body = json!({"trace_id": "nope", "name": "n", "value": "9"});
        let Some(map) = body.as_object() else {
            panic!("object")
        };
        let errors = check(map).err().map(Errors::into_vec).unwrap_or_default();
        let fields: Vec<&str> = errors.iter().map(|e| e.field()).collect();
        assert_eq!(fields, ["trace_id"]);
    }
}
