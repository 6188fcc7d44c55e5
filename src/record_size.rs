//! What a record costs in memory, and the per-record size limit (`max_record_bytes`).
//!
//! The cost is an estimate of the heap a record occupies while the SDK holds it (its text, its
//! JSON values and their nodes, and a fixed allowance for bookkeeping), always at least its
//! JSON length: it is what the byte budget charges. A record over the size limit is cut, not
//! refused: the largest of its big fields (a score's `reason` or `metadata`; a span's or a
//! trace's `input`, `output` or `metadata`) is replaced by a marker that names the field and
//! its size, until the record fits, as the Langfuse SDK does for an event over 1,000,000 bytes.
//! A huge tool output then costs a marker, not the whole trace.

use serde_json::Value;

use crate::score::Score;
use crate::text::Text;
use crate::trace_data::{SpanData, TraceData};

/// Bookkeeping per record beyond its content: the queue slot, the job, the request's headers.
pub(crate) const RECORD_OVERHEAD: usize = 512;

/// Per JSON node: the `Value` itself, and a map entry's share of its tree.
const NODE: usize = 32;

/// The key under which a cut `metadata` keeps its marker (metadata must stay an object).
pub(crate) const CUT_KEY: &str = "pandaprobe_cut";

/// Estimated heap bytes of a JSON value.
pub(crate) fn json_bytes(value: &Value) -> usize {
    NODE + match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(json_bytes).sum(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| NODE + k.len() + json_bytes(v))
            .sum(),
    }
}

fn opt_json(value: &Option<Value>) -> usize {
    value.as_ref().map_or(0, json_bytes)
}

fn opt_text(text: &Option<String>) -> usize {
    text.as_ref().map_or(0, String::len)
}

/// A score's cost.
pub(crate) fn score_bytes(score: &Score) -> usize {
    RECORD_OVERHEAD
        + score.name().len()
        + score.wire_value_len()
        + score.reason_text().map_or(0, str::len)
        + score.metadata_json().map_or(0, json_bytes)
}

/// One span's cost.
pub(crate) fn span_bytes(span: &SpanData) -> usize {
    RECORD_OVERHEAD
        + span.name.len()
        + opt_text(&span.model)
        + opt_text(&span.error)
        + [
            &span.input,
            &span.output,
            &span.token_usage,
            &span.metadata,
            &span.model_parameters,
            &span.cost,
        ]
        .into_iter()
        .map(opt_json)
        .sum::<usize>()
}

/// A trace's own fields, without its spans.
fn trace_own_bytes(trace: &TraceData) -> usize {
    RECORD_OVERHEAD
        + trace.name.len()
        + opt_text(&trace.session_id)
        + opt_text(&trace.user_id)
        + trace.tags.iter().map(|t| t.len() + NODE).sum::<usize>()
        + [&trace.input, &trace.output, &trace.metadata]
            .into_iter()
            .map(opt_json)
            .sum::<usize>()
}

/// A trace's cost, spans included.
pub(crate) fn trace_bytes(trace: &TraceData) -> usize {
    trace_own_bytes(trace) + trace.spans.iter().map(span_bytes).sum::<usize>()
}

fn marker(field: &str, bytes: usize, limit: usize) -> String {
    format!("[cut by pandaprobe: {field} was {bytes} bytes; max_record_bytes is {limit}]")
}

/// The marker in a field's place: metadata must stay a JSON object on the wire.
fn marker_value(field: &str, bytes: usize, limit: usize) -> Value {
    let text = marker(field, bytes, limit);
    if field == "metadata" {
        serde_json::json!({ CUT_KEY: text })
    } else {
        Value::String(text)
    }
}

/// While `fixed` plus the fields is over `limit`, replaces the largest field not cut yet with
/// its marker; returns how many were cut.
fn cut_fields(limit: usize, fixed: usize, mut fields: [(&str, &mut Option<Value>); 3]) -> u64 {
    let mut done = [false; 3];
    let mut cut = 0;
    loop {
        let size = fixed + fields.iter().map(|(_, v)| opt_json(v)).sum::<usize>();
        if size <= limit {
            return cut;
        }
        let largest = (0..3)
            .filter(|&i| !done[i] && fields[i].1.is_some())
            .max_by_key(|&i| opt_json(fields[i].1));
        let Some(i) = largest else { return cut };
        let (name, value) = &mut fields[i];
        let bytes = opt_json(value);
        **value = Some(marker_value(name, bytes, limit));
        done[i] = true;
        cut += 1;
    }
}

/// Cuts a span over the limit; returns how many fields were cut.
pub(crate) fn cut_span(span: &mut SpanData, limit: usize) -> u64 {
    let total = span_bytes(span);
    if total <= limit {
        return 0;
    }
    let fixed = total - opt_json(&span.input) - opt_json(&span.output) - opt_json(&span.metadata);
    cut_fields(
        limit,
        fixed,
        [
            ("input", &mut span.input),
            ("output", &mut span.output),
            ("metadata", &mut span.metadata),
        ],
    )
}

/// Cuts each span over the limit, and the trace's own fields; returns how many were cut.
pub(crate) fn cut_trace(trace: &mut TraceData, limit: usize) -> u64 {
    let mut cut: u64 = trace.spans.iter_mut().map(|s| cut_span(s, limit)).sum();
    let total = trace_own_bytes(trace);
    if total > limit {
        let fixed =
            total - opt_json(&trace.input) - opt_json(&trace.output) - opt_json(&trace.metadata);
        cut += cut_fields(
            limit,
            fixed,
            [
                ("input", &mut trace.input),
                ("output", &mut trace.output),
                ("metadata", &mut trace.metadata),
            ],
        );
    }
    cut
}

/// Cuts a score over the limit (its reason, then its metadata, the larger first); returns
/// how many fields were cut.
pub(crate) fn cut_score(score: &mut Score, limit: usize) -> u64 {
    let mut cut = 0;
    while score_bytes(score) > limit {
        let reason = score.reason_text().map_or(0, str::len);
        let metadata = score.metadata_json().map_or(0, json_bytes);
        if reason.max(metadata) <= 200 {
            break;
        }
        if reason >= metadata {
            score.set_reason(Text::from(marker("reason", reason, limit)));
        } else {
            score.set_metadata(serde_json::json!({ CUT_KEY: marker("metadata", metadata, limit) }));
        }
        cut += 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_data::SpanKind;
    use serde_json::json;

    fn big(n: usize) -> Value {
        Value::String("x".repeat(n))
    }

    #[test]
    fn the_cost_is_at_least_the_json_length() {
        let v = json!({"messages": [{"role": "user", "content": "hello there"}], "n": 1});
        assert!(json_bytes(&v) >= serde_json::to_vec(&v).unwrap().len());
    }

    #[test]
    fn a_span_over_the_limit_loses_its_largest_field_first_with_a_marker() {
        let mut span = SpanData::new(uuid::Uuid::new_v4(), None, "tool".into(), SpanKind::Tool);
        span.input = Some(big(10_000));
        span.output = Some(big(3_000_000));
        span.metadata = Some(json!({"k": "v"}));
        assert_eq!(cut_span(&mut span, 1_000_000), 1);
        let output = span.output.as_ref().and_then(Value::as_str).unwrap();
        assert!(output.contains("output was 3000032 bytes"), "{output}");
        assert_eq!(span.input, Some(big(10_000)), "the small field is kept");
        assert!(span_bytes(&span) <= 1_000_000);
    }

    #[test]
    fn every_field_goes_when_each_is_needed_and_metadata_stays_an_object() {
        let mut span = SpanData::new(uuid::Uuid::new_v4(), None, "llm".into(), SpanKind::Llm);
        span.input = Some(big(600));
        span.output = Some(big(600));
        span.metadata = Some(json!({"context": "y".repeat(600)}));
        assert_eq!(cut_span(&mut span, 1_000), 3);
        let metadata = span.metadata.as_ref().unwrap();
        assert!(metadata[CUT_KEY].as_str().unwrap().contains("metadata was"));
    }

    #[test]
    fn a_record_under_the_limit_is_untouched() {
        let mut span = SpanData::new(uuid::Uuid::new_v4(), None, "s".into(), SpanKind::Other);
        span.input = Some(big(1000));
        assert_eq!(cut_span(&mut span, 1_000_000), 0);
        assert_eq!(span.input, Some(big(1000)));
    }

    #[test]
    fn a_score_over_the_limit_keeps_its_value_and_says_what_was_cut() {
        let id = uuid::Uuid::new_v4();
        let mut score = Score::new(id, "judge", "0.5")
            .reason("r".repeat(2_000_000))
            .metadata(json!({"context": "m".repeat(10)}));
        assert_eq!(cut_score(&mut score, 1_000_000), 1);
        assert!(score
            .reason_text()
            .unwrap()
            .starts_with("[cut by pandaprobe: reason was 2000000"));
        assert_eq!(
            score.metadata_json(),
            Some(&json!({"context": "mmmmmmmmmm"}))
        );
        assert!(score_bytes(&score) <= 1_000_000);
    }
}
