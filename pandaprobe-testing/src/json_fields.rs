//! Checks of single JSON fields as pydantic makes them (strings, enums, objects, UUIDs,
//! timestamps), collecting every error like pydantic does.

use serde_json::{Map, Value};
use uuid::Uuid;

/// One entry of a 422's `errors` list.
pub(crate) struct FieldError {
    field: String,
    message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn field(&self) -> &str {
        &self.field
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

/// Every validation error of one body.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    pub(crate) fn finish<T>(self, ok: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(self.0)
        }
    }
}

/// One object's fields, with the prefix its errors are reported under (`""`, `"spans[3]."`).
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>, prefix: impl Into<String>) -> Self {
        Fields {
            map,
            prefix: prefix.into(),
        }
    }

    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field)
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// An enum field: absent gives `default`, anything but one of `allowed` is an error.
    pub(crate) fn enumeration(
        &self,
        errors: &mut Errors,
        field: &str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> Option<&'static str> {
        let found = match self.get(field) {
            None => return Some(default),
            Some(Value::String(s)) => allowed.iter().find(|a| **a == s.as_str()).copied(),
            Some(_) => None,
        };
        if found.is_none() {
            let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
            let message = format!("Input should be one of {}", quoted.join(", "));
            errors.add(self.name(field), message);
        }
        found
    }

    /// A required string of `min..=max` characters.
    pub(crate) fn string(
        &self,
        errors: &mut Errors,
        field: &str,
        min: usize,
        max: usize,
    ) -> Option<&'a str> {
        match self.get(field) {
            None => {
                errors.add(self.name(field), "Field required");
                None
            }
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n < min {
                    let message = format!("String should have at least {min} character");
                    errors.add(self.name(field), message);
                    None
                } else if n > max {
                    let message = format!("String should have at most {max} characters");
                    errors.add(self.name(field), message);
                    None
                } else {
                    Some(s)
                }
            }
            Some(_) => {
                errors.add(self.name(field), "Input should be a valid string");
                None
            }
        }
    }

    /// An optional string (`null` allowed) of at most `max` characters.
    pub(crate) fn optional_string(
        &self,
        errors: &mut Errors,
        field: &str,
        max: usize,
    ) -> Option<&'a str> {
        match self.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                if s.chars().count() > max {
                    let message = format!("String should have at most {max} characters");
                    errors.add(self.name(field), message);
                }
                Some(s)
            }
            Some(_) => {
                errors.add(self.name(field), "Input should be a valid string");
                None
            }
        }
    }

    /// An optional object: absent is fine, `null` and anything else that is not an object is
    /// not.
    pub(crate) fn object(&self, errors: &mut Errors, field: &str) {
        if !matches!(self.get(field), None | Some(Value::Object(_))) {
            errors.add(self.name(field), "Input should be a valid dictionary");
        }
    }

    /// A UUID: absent gives `None`, so does `null` when `nullable`.
    pub(crate) fn uuid(&self, errors: &mut Errors, field: &str, nullable: bool) -> Option<Uuid> {
        match self.get(field) {
            None => None,
            Some(Value::Null) if nullable => None,
            Some(value) => {
                let parsed = value.as_str().and_then(|s| Uuid::parse_str(s).ok());
                if parsed.is_none() {
                    errors.add(self.name(field), "Input should be a valid UUID");
                }
                parsed
            }
        }
    }

    /// A timestamp field, required or optional (`null` allowed when optional).
    pub(crate) fn timestamp(&self, errors: &mut Errors, field: &str, required: bool) {
        let ok = match self.get(field) {
            None if required => {
                errors.add(self.name(field), "Field required");
                return;
            }
            None => true,
            Some(Value::Null) => !required,
            Some(Value::Number(_)) => true,
            Some(Value::String(s)) => looks_like_timestamp(s),
            Some(_) => false,
        };
        if !ok {
            errors.add(self.name(field), "Input should be a valid datetime");
        }
    }
}

/// Whether a U+0000 is anywhere in `value`: in a string or an object key, at any depth.
pub(crate) fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
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
    use serde_json::json;

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
    fn nul_anywhere() {
        assert!(!contains_nul(&json!({"a": [1, "b", {"c": null}]})));
        assert!(contains_nul(&json!("a\u{0}")));
        assert!(contains_nul(&json!({"a": [1, {"c": "\u{0}"}]})));
        assert!(contains_nul(&json!({"a": {"k\u{0}": 1}})));
    }
}
