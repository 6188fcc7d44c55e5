//! The server's rules for a score, applied at the call: exactly what it refuses (422) or fails
//! on (500) is refused here; everything it stores passes, untouched.

use uuid::Uuid;

use super::{python_float, render_number, Score, ScoreDataType, ScoreValue, TraceIdInput};
use crate::error::ScoreError;

/// Longest name or value the server stores (a 255-character column; longer gives a 500).
const MAX_FIELD_CHARS: usize = 255;

impl Score {
    /// Checks every rule the server enforces, so that a score that passes is never answered
    /// with a 422 or a 500 for its content; returns the trace id.
    ///
    /// The server's rules (backend 0.5.0): a UUID trace id; name and value at most 255
    /// characters (longer is a database error, 500); NUMERIC as Python's `float()` reads it,
    /// in `[0, 1]`; BOOLEAN `true`/`false` in any case, nothing around it; CATEGORICAL and the
    /// name anything, empty included; metadata a JSON object; no NUL character anywhere (the
    /// database refuses it, 500).
    pub(crate) fn validate(&self) -> Result<Uuid, ScoreError> {
        let trace_id = match &self.trace_id {
            TraceIdInput::Valid(id) => *id,
            TraceIdInput::Invalid(raw) => return Err(ScoreError::InvalidTraceId(raw.to_string())),
        };
        check_length(&self.name, ScoreError::NameTooLong)?;
        if self.name.as_bytes().contains(&0) {
            return Err(ScoreError::NulCharacter("name"));
        }
        match (&self.value, self.data_type) {
            (ScoreValue::Text(text), data_type) => validate_text(text, data_type)?,
            (ScoreValue::Number(n), ScoreDataType::Numeric) => {
                if !(0.0..=1.0).contains(n) {
                    return Err(ScoreError::InvalidNumeric(n.to_string()));
                }
            }
            // A number relabelled as BOOLEAN or CATEGORICAL is judged as its text form.
            (ScoreValue::Number(n), data_type) => validate_text(&render_number(*n), data_type)?,
            (ScoreValue::Bool(b), ScoreDataType::Numeric) => {
                return Err(ScoreError::InvalidNumeric(b.to_string()))
            }
            (ScoreValue::Bool(_), _) => {}
        }
        if let Some(extras) = &self.extras {
            if extras
                .reason
                .as_ref()
                .is_some_and(|r| r.as_bytes().contains(&0))
            {
                return Err(ScoreError::NulCharacter("reason"));
            }
            if let Some(metadata) = &extras.metadata {
                if !metadata.is_object() {
                    return Err(ScoreError::MetadataNotObject(json_kind(metadata)));
                }
                if has_nul(metadata) {
                    return Err(ScoreError::NulCharacter("metadata"));
                }
            }
        }
        Ok(trace_id)
    }
}

fn validate_text(text: &str, data_type: ScoreDataType) -> Result<(), ScoreError> {
    check_length(text, ScoreError::ValueTooLong)?;
    if text.as_bytes().contains(&0) {
        return Err(ScoreError::NulCharacter("value"));
    }
    match data_type {
        ScoreDataType::Numeric => match python_float::parse(text) {
            Some(n) if (0.0..=1.0).contains(&n) => Ok(()),
            _ => Err(ScoreError::InvalidNumeric(text.to_owned())),
        },
        ScoreDataType::Boolean => {
            if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") {
                Ok(())
            } else {
                Err(ScoreError::InvalidBoolean(text.to_owned()))
            }
        }
        ScoreDataType::Categorical => Ok(()),
    }
}

/// The server counts characters, not bytes; the byte length bounds the count, so the common
/// short string is checked without walking it.
fn check_length(text: &str, error: fn(usize) -> ScoreError) -> Result<(), ScoreError> {
    if text.len() <= MAX_FIELD_CHARS {
        return Ok(());
    }
    let chars = text.chars().count();
    if chars > MAX_FIELD_CHARS {
        return Err(error(chars));
    }
    Ok(())
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.as_bytes().contains(&0),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.as_bytes().contains(&0) || has_nul(v)),
        _ => false,
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
