//! The score record and its validation: exactly what the server refuses (or fails on) is
//! refused here, at the caller's `score()`, before anything is queued; everything it stores is
//! accepted and sent as given.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

mod python_float;
mod validate;

use crate::text::Text;

/// How the server interprets a score's value.
///
/// Parses from its wire name in any case, as the Python SDK's strings:
///
/// ```
/// use pandaprobe::ScoreDataType;
///
/// let t: ScoreDataType = "boolean".parse()?;
/// assert_eq!(t, ScoreDataType::Boolean);
/// assert_eq!(t.to_string(), "BOOLEAN");
/// assert!("percent".parse::<ScoreDataType>().is_err());
/// # Ok::<(), pandaprobe::ParseScoreDataTypeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ScoreDataType {
    /// A number in `[0, 1]`, sent as a string. The default.
    #[default]
    Numeric,
    /// `true` or `false`, any case.
    Boolean,
    /// Any label, such as `"positive"` or `"PASS"`.
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

/// The error of parsing a [`ScoreDataType`] from a string that names none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a score data type (expected NUMERIC, BOOLEAN or CATEGORICAL, any case)")]
pub struct ParseScoreDataTypeError(String);

impl FromStr for ScoreDataType {
    type Err = ParseScoreDataTypeError;

    fn from_str(s: &str) -> Result<ScoreDataType, ParseScoreDataTypeError> {
        [
            ScoreDataType::Numeric,
            ScoreDataType::Boolean,
            ScoreDataType::Categorical,
        ]
        .into_iter()
        .find(|t| s.eq_ignore_ascii_case(t.as_str()))
        .ok_or_else(|| ParseScoreDataTypeError(s.to_owned()))
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
    Text(Text),
    Number(f64),
    Bool(bool),
}

/// The optional parts of a score, boxed so that a plain score stays small in the queue.
#[derive(Clone, PartialEq, Default)]
struct Extras {
    reason: Option<Text>,
    metadata: Option<serde_json::Value>,
}

/// One score for one trace: user feedback, a quality metric, a pass/fail check.
///
/// Build it with [`Score::new`] (a value as text, NUMERIC unless [`Score::data_type`] says
/// otherwise) or the typed constructors [`Score::numeric`], [`Score::boolean`] and
/// [`Score::categorical`], then hand it to [`Client::score`](crate::Client::score), which
/// validates it against the server's rules.
///
/// Names, values and reasons take any string (see [`Text`]): borrowed `&str` from anywhere,
/// or an owned `String`; up to 24 bytes are copied without an allocation.
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
#[must_use = "a score does nothing until it is handed to `score()`"]
pub struct Score {
    trace_id: TraceIdInput,
    name: Text,
    value: ScoreValue,
    data_type: ScoreDataType,
    extras: Option<Box<Extras>>,
}

impl Score {
    /// A score whose value is given as text, sent exactly as given. NUMERIC unless
    /// [`Score::data_type`] sets another type.
    pub fn new(trace_id: impl IntoTraceId, name: impl Into<Text>, value: impl Into<Text>) -> Score {
        Score::with_value(
            trace_id,
            name,
            ScoreValue::Text(value.into()),
            ScoreDataType::Numeric,
        )
    }

    /// A NUMERIC score; the server accepts values in `[0, 1]`.
    pub fn numeric(trace_id: impl IntoTraceId, name: impl Into<Text>, value: f64) -> Score {
        Score::with_value(
            trace_id,
            name,
            ScoreValue::Number(value),
            ScoreDataType::Numeric,
        )
    }

    /// A BOOLEAN score.
    pub fn boolean(trace_id: impl IntoTraceId, name: impl Into<Text>, value: bool) -> Score {
        Score::with_value(
            trace_id,
            name,
            ScoreValue::Bool(value),
            ScoreDataType::Boolean,
        )
    }

    /// A CATEGORICAL score: any label.
    pub fn categorical(
        trace_id: impl IntoTraceId,
        name: impl Into<Text>,
        value: impl Into<Text>,
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
        name: impl Into<Text>,
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
    pub fn reason(mut self, reason: impl Into<Text>) -> Score {
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

    pub(crate) fn kind(&self) -> ScoreDataType {
        self.data_type
    }

    pub(crate) fn reason_text(&self) -> Option<&str> {
        self.extras.as_ref()?.reason.as_deref()
    }

    pub(crate) fn metadata_json(&self) -> Option<&serde_json::Value> {
        self.extras.as_ref()?.metadata.as_ref()
    }

    /// The wire value's length without rendering it (a number's text is at most 24 bytes).
    pub(crate) fn wire_value_len(&self) -> usize {
        match &self.value {
            ScoreValue::Text(text) => text.len(),
            ScoreValue::Number(_) => 24,
            ScoreValue::Bool(_) => 5,
        }
    }

    pub(crate) fn set_reason(&mut self, reason: Text) {
        self.extras.get_or_insert_with(Default::default).reason = Some(reason);
    }

    pub(crate) fn set_metadata(&mut self, metadata: serde_json::Value) {
        self.extras.get_or_insert_with(Default::default).metadata = Some(metadata);
    }

    pub(crate) fn set_trace_id(&mut self, id: Uuid) {
        self.trace_id = TraceIdInput::Valid(id);
    }

    /// Takes the name out, leaving an empty one: the worker keeps it for drop reports after the
    /// body is built.
    pub(crate) fn take_name(&mut self) -> Text {
        std::mem::take(&mut self.name)
    }

    /// The value as the server receives it: always a string, text exactly as given.
    pub(crate) fn wire_value(&self) -> std::borrow::Cow<'_, str> {
        match &self.value {
            ScoreValue::Text(text) => text.as_str().into(),
            ScoreValue::Number(n) => render_number(*n).into(),
            ScoreValue::Bool(b) => (if *b { "true" } else { "false" }).into(),
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
            .field("reason", &self.reason_text())
            .field("metadata", &self.metadata_json())
            .finish()
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

#[cfg(test)]
mod tests;
