//! The score record and its validation: everything the server would reject is refused here,
//! at the caller's `score()`, before anything is queued.

use std::borrow::Cow;
use std::fmt;

use uuid::Uuid;

use crate::error::ScoreError;

/// Longest name or value the server stores (a 255-character column; longer gives a 500).
pub(crate) const MAX_FIELD_CHARS: usize = 255;

/// How the server interprets a score's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ScoreDataType {
    /// A number in `[0, 1]`, sent as a string. The default.
    #[default]
    Numeric,
    /// `true` or `false`.
    Boolean,
    /// Any non-empty label, such as `"positive"` or `"PASS"`.
    Categorical,
}

impl ScoreDataType {
    /// The wire name: `NUMERIC`, `BOOLEAN` or `CATEGORICAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreDataType::Numeric => "NUMERIC",
            ScoreDataType::Boolean => "BOOLEAN",
            ScoreDataType::Categorical => "CATEGORICAL",
        }
    }
}

impl fmt::Display for ScoreDataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trace id as the caller gave it: parsed at construction, so an invalid one costs nothing
/// until `score()` reports it, and a valid one is 16 bytes with no allocation.
#[derive(Clone, PartialEq)]
pub(crate) enum TraceIdInput {
    Valid(Uuid),
    Invalid(Box<str>),
}

/// Anything that names a trace: a [`Uuid`], or its text form as `&str` or `String`.
pub trait IntoTraceId {
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn into_trace_id(self) -> TraceIdInput;
}

impl IntoTraceId for Uuid {
    #[allow(private_interfaces)]
    fn into_trace_id(self) -> TraceIdInput {
        TraceIdInput::Valid(self)
    }
}

impl IntoTraceId for &Uuid {
    #[allow(private_interfaces)]
    fn into_trace_id(self) -> TraceIdInput {
        TraceIdInput::Valid(*self)
    }
}

impl IntoTraceId for &str {
    #[allow(private_interfaces)]
    fn into_trace_id(self) -> TraceIdInput {
        match Uuid::try_parse(self) {
            Ok(id) => TraceIdInput::Valid(id),
            Err(_) => TraceIdInput::Invalid(self.into()),
        }
    }
}

impl IntoTraceId for String {
    #[allow(private_interfaces)]
    fn into_trace_id(self) -> TraceIdInput {
        self.as_str().into_trace_id()
    }
}

impl IntoTraceId for &String {
    #[allow(private_interfaces)]
    fn into_trace_id(self) -> TraceIdInput {
        self.as_str().into_trace_id()
    }
}

/// A value as given: typed values are rendered to the wire string in the worker, off the
/// caller's hot path.
#[derive(Clone, PartialEq)]
pub(crate) enum ScoreValue {
    Text(Cow<'static, str>),
    Number(f64),
    Bool(bool),
}

/// The optional parts of a score, boxed so that a plain score stays small in the queue.
#[derive(Clone, PartialEq, Default)]
pub(crate) struct Extras {
    pub(crate) reason: Option<Cow<'static, str>>,
    pub(crate) metadata: Option<serde_json::Value>,
}

/// One score for one trace: user feedback, a quality metric, a pass/fail check.
///
/// Build it with [`Score::new`] (a value as text, NUMERIC unless [`Score::data_type`] says
/// otherwise) or the typed constructors [`Score::numeric`], [`Score::boolean`] and
/// [`Score::categorical`], then hand it to [`Client::score`](crate::Client::score), which
/// validates it against the server's rules.
///
/// Names and values take `&'static str` without allocating, or an owned `String`.
///
/// ```
/// use pandaprobe::{Score, ScoreDataType};
/// use serde_json::json;
///
/// let trace_id = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
/// let a = Score::new(trace_id, "user_satisfaction", "0.9").reason("User clicked thumbs up");
/// let b = Score::new(trace_id, "hallucination_free", "true").data_type(ScoreDataType::Boolean);
/// let c = Score::numeric(trace_id, "relevance", 0.9);
/// let d = Score::categorical(trace_id, "sentiment", "positive").metadata(json!({"judge": "v2"}));
/// # let _ = (a, b, c, d);
/// ```
#[derive(Clone, PartialEq)]
pub struct Score {
    pub(crate) trace_id: TraceIdInput,
    pub(crate) name: Cow<'static, str>,
    pub(crate) value: ScoreValue,
    pub(crate) data_type: ScoreDataType,
    pub(crate) extras: Option<Box<Extras>>,
}

impl Score {
    /// A score whose value is given as text, as the server stores it. NUMERIC unless
    /// [`Score::data_type`] sets another type.
    pub fn new(
        trace_id: impl IntoTraceId,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Score {
        Score::with_value(
            trace_id,
            name,
            ScoreValue::Text(value.into()),
            ScoreDataType::Numeric,
        )
    }

    /// A NUMERIC score; the server accepts values in `[0, 1]`.
    pub fn numeric(
        trace_id: impl IntoTraceId,
        name: impl Into<Cow<'static, str>>,
        value: f64,
    ) -> Score {
        Score::with_value(
            trace_id,
            name,
            ScoreValue::Number(value),
            ScoreDataType::Numeric,
        )
    }

    /// A BOOLEAN score.
    pub fn boolean(
        trace_id: impl IntoTraceId,
        name: impl Into<Cow<'static, str>>,
        value: bool,
    ) -> Score {
        Score::with_value(
            trace_id,
            name,
            ScoreValue::Bool(value),
            ScoreDataType::Boolean,
        )
    }

    /// A CATEGORICAL score: any non-empty label.
    pub fn categorical(
        trace_id: impl IntoTraceId,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Score {
        Score::with_value(
            trace_id,
            name,
            ScoreValue::Text(value.into()),
            ScoreDataType::Categorical,
        )
    }

    fn with_value(
        trace_id: impl IntoTraceId,
        name: impl Into<Cow<'static, str>>,
        value: ScoreValue,
        data_type: ScoreDataType,
    ) -> Score {
        Score {
            trace_id: trace_id.into_trace_id(),
            name: name.into(),
            value,
            data_type,
            extras: None,
        }
    }

    /// Sets how the server interprets the value (default NUMERIC).
    pub fn data_type(mut self, data_type: ScoreDataType) -> Score {
        self.data_type = data_type;
        self
    }

    /// Adds a human-readable reason, sent as `reason`.
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> Score {
        self.extras.get_or_insert_with(Default::default).reason = Some(reason.into());
        self
    }

    /// Adds metadata; it must be a JSON object (checked by `score()`).
    pub fn metadata(mut self, metadata: serde_json::Value) -> Score {
        self.extras.get_or_insert_with(Default::default).metadata = Some(metadata);
        self
    }

    /// The trace id, if it parsed as a UUID.
    pub fn trace_id(&self) -> Option<Uuid> {
        match self.trace_id {
            TraceIdInput::Valid(id) => Some(id),
            TraceIdInput::Invalid(_) => None,
        }
    }

    /// The score's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exact JSON body this score is sent as (`POST /evaluations/trace-scores`), after the
    /// same validation as [`Client::score`](crate::Client::score). For logs and tests; the
    /// client builds it in its worker, not on the caller's thread.
    pub fn to_body(&self) -> Result<Vec<u8>, ScoreError> {
        let trace_id = self.validate()?;
        Ok(crate::body::score_body(trace_id, self))
    }

    pub(crate) fn set_trace_id(&mut self, id: Uuid) {
        self.trace_id = TraceIdInput::Valid(id);
    }

    pub(crate) fn reason_str(&self) -> Option<&str> {
        self.extras.as_ref()?.reason.as_deref()
    }

    pub(crate) fn metadata_value(&self) -> Option<&serde_json::Value> {
        self.extras.as_ref()?.metadata.as_ref()
    }

    /// Checks every rule the server enforces, so that a score that passes is never answered
    /// with a 422 or a 500 for its content.
    pub(crate) fn validate(&self) -> Result<Uuid, ScoreError> {
        let trace_id = match &self.trace_id {
            TraceIdInput::Valid(id) => *id,
            TraceIdInput::Invalid(raw) => return Err(ScoreError::InvalidTraceId(raw.to_string())),
        };
        if self.name.is_empty() {
            return Err(ScoreError::EmptyName);
        }
        check_length(&self.name, ScoreError::NameTooLong)?;
        match (&self.value, self.data_type) {
            (ScoreValue::Text(text), data_type) => validate_text(text, data_type)?,
            (ScoreValue::Number(n), ScoreDataType::Numeric) => {
                if !is_unit_interval(*n) {
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
        if self.name.contains('\0') {
            return Err(ScoreError::NulCharacter("name"));
        }
        if let ScoreValue::Text(text) = &self.value {
            if text.contains('\0') {
                return Err(ScoreError::NulCharacter("value"));
            }
        }
        if let Some(extras) = &self.extras {
            if extras.reason.as_ref().is_some_and(|r| r.contains('\0')) {
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

    /// The value as the server wants it: always a string, booleans in lower case.
    pub(crate) fn wire_value(&self) -> Cow<'_, str> {
        match &self.value {
            ScoreValue::Text(text) if self.data_type == ScoreDataType::Boolean => {
                Cow::Owned(text.to_ascii_lowercase())
            }
            ScoreValue::Text(text) => Cow::Borrowed(text),
            ScoreValue::Number(n) => Cow::Owned(render_number(*n)),
            ScoreValue::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }
}

impl fmt::Debug for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trace_id: &dyn fmt::Debug = match &self.trace_id {
            TraceIdInput::Valid(id) => id,
            TraceIdInput::Invalid(raw) => raw,
        };
        f.debug_struct("Score")
            .field("trace_id", trace_id)
            .field("name", &self.name)
            .field("value", &self.wire_value())
            .field("data_type", &self.data_type)
            .field("reason", &self.reason_str())
            .field("metadata", &self.metadata_value())
            .finish()
    }
}

fn validate_text(text: &str, data_type: ScoreDataType) -> Result<(), ScoreError> {
    check_length(text, ScoreError::ValueTooLong)?;
    match data_type {
        ScoreDataType::Numeric => match text.parse::<f64>() {
            Ok(n) if is_unit_interval(n) => Ok(()),
            _ => Err(ScoreError::InvalidNumeric(text.to_owned())),
        },
        ScoreDataType::Boolean => {
            if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") {
                Ok(())
            } else {
                Err(ScoreError::InvalidBoolean(text.to_owned()))
            }
        }
        ScoreDataType::Categorical if text.is_empty() => Err(ScoreError::EmptyCategorical),
        ScoreDataType::Categorical => Ok(()),
    }
}

/// The shortest text that reads back as `n`; exponent form where the plain decimal would be
/// long (`1e-300` would otherwise be 302 characters, over the server's 255).
fn render_number(n: f64) -> String {
    let plain = n.to_string();
    if plain.len() <= 24 {
        plain
    } else {
        format!("{n:e}")
    }
}

fn is_unit_interval(n: f64) -> bool {
    (0.0..=1.0).contains(&n)
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
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";

    fn check(score: Score) -> Result<Uuid, ScoreError> {
        score.validate()
    }

    #[test]
    fn accepts_valid_scores_of_each_type() {
        assert!(check(Score::new(ID, "a", "0.85")).is_ok());
        assert!(check(Score::new(ID, "a", "1")).is_ok());
        assert!(check(Score::new(ID, "a", "TRUE").data_type(ScoreDataType::Boolean)).is_ok());
        assert!(check(Score::numeric(ID, "a", 0.0)).is_ok());
        assert!(check(Score::boolean(ID, "a", false)).is_ok());
        assert!(check(Score::categorical(ID, "a", "PASS").metadata(json!({"k": 1}))).is_ok());
        assert!(check(Score::new(Uuid::nil(), "a", "0.5").reason("r")).is_ok());
    }

    #[test]
    fn rejects_what_the_server_rejects() {
        let long = "x".repeat(256);
        let cases = [
            (
                Score::new("nope", "a", "0.5"),
                ScoreError::InvalidTraceId("nope".into()),
            ),
            (Score::new(ID, "", "0.5"), ScoreError::EmptyName),
            (
                Score::new(ID, long.clone(), "0.5"),
                ScoreError::NameTooLong(256),
            ),
            (
                Score::categorical(ID, "a", long.clone()),
                ScoreError::ValueTooLong(256),
            ),
            (
                Score::new(ID, "a", "1.5"),
                ScoreError::InvalidNumeric("1.5".into()),
            ),
            (
                Score::new(ID, "a", "nan"),
                ScoreError::InvalidNumeric("nan".into()),
            ),
            (
                Score::new(ID, "a", "abc"),
                ScoreError::InvalidNumeric("abc".into()),
            ),
            (
                Score::numeric(ID, "a", f64::INFINITY),
                ScoreError::InvalidNumeric("inf".into()),
            ),
            (
                Score::numeric(ID, "a", -0.1),
                ScoreError::InvalidNumeric("-0.1".into()),
            ),
            (
                Score::new(ID, "a", "yes").data_type(ScoreDataType::Boolean),
                ScoreError::InvalidBoolean("yes".into()),
            ),
            (
                Score::categorical(ID, "a", ""),
                ScoreError::EmptyCategorical,
            ),
            (
                Score::categorical(ID, "a", "x").metadata(json!([1])),
                ScoreError::MetadataNotObject("an array"),
            ),
            (
                Score::categorical(ID, "a", "x").metadata(json!(null)),
                ScoreError::MetadataNotObject("null"),
            ),
            (
                Score::new(ID, "a\0", "0.5"),
                ScoreError::NulCharacter("name"),
            ),
            (
                Score::categorical(ID, "a", "x\0"),
                ScoreError::NulCharacter("value"),
            ),
            (
                Score::categorical(ID, "a", "x").reason("\0"),
                ScoreError::NulCharacter("reason"),
            ),
            (
                Score::categorical(ID, "a", "x").metadata(json!({"k": ["\0"]})),
                ScoreError::NulCharacter("metadata"),
            ),
        ];
        for (score, expected) in cases {
            assert_eq!(check(score), Err(expected));
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let name = "é".repeat(255);
        assert!(check(Score::new(ID, name, "0.5")).is_ok());
    }

    #[test]
    fn wire_values() {
        assert_eq!(Score::numeric(ID, "a", 0.85).wire_value(), "0.85");
        assert_eq!(Score::numeric(ID, "a", 1e-300).wire_value(), "1e-300");
        assert_eq!(Score::numeric(ID, "a", 1.0).wire_value(), "1");
        assert_eq!(Score::boolean(ID, "a", true).wire_value(), "true");
        let relabelled = Score::new(ID, "a", "False").data_type(ScoreDataType::Boolean);
        assert_eq!(relabelled.wire_value(), "false");
    }
}
