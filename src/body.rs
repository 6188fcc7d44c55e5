//! The one place that builds request bodies: compact JSON with the keys in the contract's
//! order, optional keys omitted (the server answers `null` metadata with a 422).

use std::borrow::Cow;

use serde::Serialize;
use uuid::Uuid;

use crate::error::ScoreError;
use crate::score::Score;
use crate::trace_data::{SpanData, TraceData, MAX_SPANS_PER_REQUEST};

/// Longest trace or span name the server takes.
const MAX_NAME_CHARS: usize = 512;
/// Longest session id, user id, environment, release or model the server takes.
const MAX_ID_CHARS: usize = 255;

#[derive(Serialize)]
struct ScoreBody<'a> {
    trace_id: uuid::fmt::Hyphenated,
    name: &'a str,
    value: Cow<'a, str>,
    data_type: &'static str,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a serde_json::Value>,
}

/// The body of `POST /evaluations/trace-scores` for a validated score.
pub(crate) fn score_body(trace_id: Uuid, score: &Score) -> Vec<u8> {
    let body = ScoreBody {
        trace_id: trace_id.hyphenated(),
        name: score.name(),
        value: score.wire_value(),
        data_type: score.kind().as_str(),
        source: "PROGRAMMATIC",
        reason: score.reason_text(),
        metadata: score.metadata_json(),
    };
    // Serializing strings, a UUID and a JSON value into memory cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

impl Score {
    /// The exact JSON body this score is sent as (`POST /evaluations/trace-scores`), after the
    /// same validation as [`Client::score`](crate::Client::score). For logs and tests; the
    /// client builds it in its worker, not on the caller's thread.
    ///
    /// ```
    /// let score = pandaprobe::Score::categorical(pandaprobe::Uuid::nil(), "verdict", "PASS");
    /// assert_eq!(
    ///     String::from_utf8(score.to_body()?)?,
    ///     r#"{"trace_id":"00000000-0000-0000-0000-000000000000","name":"verdict","value":"PASS","data_type":"CATEGORICAL","source":"PROGRAMMATIC"}"#
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The score breaks one of the server's rules (see [`ScoreError`]).
    pub fn to_body(&self) -> Result<Vec<u8>, ScoreError> {
        let trace_id = self.validate()?;
        Ok(score_body(trace_id, self))
    }
}

#[derive(Serialize)]
struct TraceBody<'a> {
    trace_id: uuid::fmt::Hyphenated,
    name: &'a str,
    status: &'static str,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    spans: Vec<SpanBody<'a>>,
}

#[derive(Serialize)]
struct SpanBody<'a> {
    span_id: uuid::fmt::Hyphenated,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<uuid::fmt::Hyphenated>,
    name: &'a str,
    kind: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_usage: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a serde_json::Value>,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_parameters: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<&'a serde_json::Value>,
}

/// The body of `POST /traces`: the trace with its first [`MAX_SPANS_PER_REQUEST`] spans, cut
/// to the server's limits, with the client's environment and release. The rest go in
/// [`spans_bodies`].
pub(crate) fn trace_body(
    trace: &TraceData,
    environment: Option<&str>,
    release: Option<&str>,
) -> Vec<u8> {
    let body = TraceBody {
        trace_id: trace.trace_id.hyphenated(),
        name: name(&trace.name),
        status: trace.status.as_str(),
        started_at: timestamp(trace.started_at),
        ended_at: trace.ended_at.map(timestamp),
        input: trace.input.as_ref(),
        output: trace.output.as_ref(),
        metadata: trace.metadata.as_ref(),
        session_id: trace.session_id.as_deref().map(id),
        user_id: trace.user_id.as_deref().map(id),
        environment: environment.map(id),
        release: release.map(id),
        tags: &trace.tags,
        spans: trace
            .spans
            .iter()
            .take(MAX_SPANS_PER_REQUEST)
            .map(span_body)
            .collect(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The bodies of `POST /traces/{id}/spans` for the spans past the first request's, at most
/// [`MAX_SPANS_PER_REQUEST`] each, with how many spans each carries.
pub(crate) fn spans_bodies(trace: &TraceData) -> Vec<(Vec<u8>, usize)> {
    trace
        .spans
        .get(MAX_SPANS_PER_REQUEST..)
        .unwrap_or_default()
        .chunks(MAX_SPANS_PER_REQUEST)
        .map(|chunk| (spans_body(chunk), chunk.len()))
        .collect()
}

/// A JSON array of spans, as `POST /traces/{id}/spans` takes them.
pub(crate) fn spans_body(spans: &[SpanData]) -> Vec<u8> {
    let spans: Vec<SpanBody<'_>> = spans.iter().map(span_body).collect();
    serde_json::to_vec(&spans).unwrap_or_default()
}

fn span_body(span: &SpanData) -> SpanBody<'_> {
    SpanBody {
        span_id: span.span_id.hyphenated(),
        parent_span_id: span.parent_span_id.map(|p| p.hyphenated()),
        name: name(&span.name),
        kind: span.kind.as_str(),
        status: span.status.as_str(),
        input: span.input.as_ref(),
        output: span.output.as_ref(),
        model: span.model.as_deref().map(id),
        token_usage: span.token_usage.as_ref(),
        metadata: span.metadata.as_ref(),
        started_at: timestamp(span.started_at),
        ended_at: span.ended_at.map(timestamp),
        error: span.error.as_deref(),
        completion_start_time: span.completion_start_time.map(timestamp),
        model_parameters: span.model_parameters.as_ref(),
        cost: span.cost.as_ref(),
    }
}

fn name(name: &str) -> &str {
    if name.is_empty() {
        "unnamed"
    } else {
        clip(name, MAX_NAME_CHARS)
    }
}

fn id(text: &str) -> &str {
    clip(text, MAX_ID_CHARS)
}

/// The first `max` characters of `text`.
fn clip(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// RFC 3339 in UTC with microseconds, as the Python SDK sends: `2026-11-29T03:27:52.093623+00:00`.
pub(crate) fn timestamp(at: std::time::SystemTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    time::OffsetDateTime::from(at)
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScoreDataType;
    use serde_json::json;

    const ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";

    fn body(score: Score) -> String {
        let id = score.validate().unwrap();
        String::from_utf8(score_body(id, &score)).unwrap()
    }

    #[test]
    fn matches_the_python_sdk_byte_for_byte() {
        assert_eq!(
            body(
                Score::new(ID, "accuracy", "0.85")
                    .reason("close enough")
                    .metadata(json!({"judge": "unit"}))
            ),
            r#"{"trace_id":"29c160fc-44bc-41ad-8bec-fa678ddb1f9a","name":"accuracy","value":"0.85","data_type":"NUMERIC","source":"PROGRAMMATIC","reason":"close enough","metadata":{"judge":"unit"}}"#
        );
        assert_eq!(
            body(Score::categorical(ID, "verdict", "PASS")),
            r#"{"trace_id":"29c160fc-44bc-41ad-8bec-fa678ddb1f9a","name":"verdict","value":"PASS","data_type":"CATEGORICAL","source":"PROGRAMMATIC"}"#
        );
    }

    #[test]
    fn typed_values_are_strings() {
        let b = body(Score::boolean(ID, "ok", true));
        assert!(b.contains(r#""value":"true","data_type":"BOOLEAN""#), "{b}");
        let b = body(Score::new(ID, "ok", "TRUE").data_type(ScoreDataType::Boolean));
        assert!(b.contains(r#""value":"TRUE""#), "sent as given: {b}");
        let b = body(Score::numeric(ID, "n", 0.5));
        assert!(b.contains(r#""value":"0.5","data_type":"NUMERIC""#), "{b}");
        let b = body(Score::new(ID.to_uppercase(), "n", "1"));
        assert!(b.starts_with(&format!(r#"{{"trace_id":"{ID}""#)), "{b}");
    }
}
