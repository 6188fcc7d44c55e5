//! The visitors that collect a span's field values as `tracing` records them, and an event's
//! error message.

use std::fmt;

use serde_json::Value;

use tracing::field::{Field, Visit};

/// A field's value as `tracing` recorded it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum FieldValue {
    Text(String),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
}

impl FieldValue {
    pub(super) fn into_text(self) -> String {
        match self {
            FieldValue::Text(s) => s,
            FieldValue::Int(n) => n.to_string(),
            FieldValue::Uint(n) => n.to_string(),
            FieldValue::Float(n) => n.to_string(),
            FieldValue::Bool(b) => b.to_string(),
        }
    }

    pub(super) fn into_json(self) -> Value {
        match self {
            FieldValue::Text(s) => Value::String(s),
            FieldValue::Int(n) => n.into(),
            FieldValue::Uint(n) => n.into(),
            // NaN and infinities have no JSON form: kept as text.
            FieldValue::Float(n) => serde_json::Number::from_f64(n)
                .map_or_else(|| Value::String(n.to_string()), Value::Number),
            FieldValue::Bool(b) => b.into(),
        }
    }

    pub(super) fn as_count(&self) -> Option<u64> {
        match self {
            FieldValue::Uint(n) => Some(*n),
            FieldValue::Int(n) => u64::try_from(*n).ok(),
            FieldValue::Text(s) => s.trim().parse().ok(),
            FieldValue::Float(_) | FieldValue::Bool(_) => None,
        }
    }

    pub(super) fn as_number(&self) -> Option<f64> {
        let n = match self {
            FieldValue::Float(n) => *n,
            FieldValue::Int(n) => *n as f64,
            FieldValue::Uint(n) => *n as f64,
            FieldValue::Text(s) => s.trim().parse().ok()?,
            FieldValue::Bool(_) => return None,
        };
        n.is_finite().then_some(n)
    }
}

/// The values of one span's fields, in the order recorded.
#[derive(Debug, Default)]
pub(super) struct FieldValues(pub(super) Vec<(&'static str, FieldValue)>);

impl FieldValues {
    /// An event's `return` field (what `#[instrument(ret)]` records) as an `output`.
    pub(super) fn returned(self) -> Option<FieldValues> {
        let (_, value) = self.0.into_iter().find(|(name, _)| *name == "return")?;
        // `ret` records `Debug`: a returned `String` arrives quoted, and is unquoted here.
        let value = match value {
            FieldValue::Text(text) => match serde_json::from_str::<String>(&text) {
                Ok(unquoted) => FieldValue::Text(unquoted),
                Err(_) => FieldValue::Text(text),
            },
            other => other,
        };
        Some(FieldValues(vec![("output", value)]))
    }

    /// The value of `name` as text, if it was recorded as a non-empty string.
    pub(super) fn text(&self, name: &str) -> Option<&str> {
        self.0.iter().find_map(|(n, v)| match v {
            FieldValue::Text(s) if *n == name && !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
    }

    fn push(&mut self, field: &Field, value: FieldValue) {
        self.0.push((field.name(), value));
    }
}

impl Visit for FieldValues {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, FieldValue::Text(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, FieldValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, FieldValue::Uint(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value = i64::try_from(value)
            .map_or_else(|_| FieldValue::Text(value.to_string()), FieldValue::Int);
        self.push(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = u64::try_from(value)
            .map_or_else(|_| FieldValue::Text(value.to_string()), FieldValue::Uint);
        self.push(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, FieldValue::Float(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, FieldValue::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, FieldValue::Text(value.to_string()));
    }

    // `%value` arrives here too, already in its Display form.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, FieldValue::Text(format!("{value:?}")));
    }
}

/// The message of an ERROR event: its `error` field, else its `message`.
#[derive(Debug, Default)]
pub(super) struct ErrorMessage {
    error: Option<String>,
    message: Option<String>,
}

impl ErrorMessage {
    pub(super) fn into_text(self) -> Option<String> {
        self.error.or(self.message)
    }
}

impl Visit for ErrorMessage {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "error" => self.error = Some(format!("{value:?}")),
            "message" => self.message = Some(format!("{value:?}")),
            _ => {}
        }
    }
}
