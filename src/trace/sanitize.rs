//! Makes an ended trace storable. The server answers 202 for a trace with a NUL character
//! anywhere and then never stores it (PostgreSQL refuses NUL in text and JSON), so every NUL,
//! in every string of the trace and its spans, JSON keys included, becomes U+FFFD.

use serde_json::{Map, Value};

use crate::trace_data::TraceData;

const REPLACEMENT: &str = "\u{FFFD}";

/// Replaces every NUL in the trace; returns how many were replaced.
pub(crate) fn replace_nul(trace: &mut TraceData) -> u64 {
    let mut n = 0;
    n += fix_string(&mut trace.name);
    for value in [&mut trace.input, &mut trace.output, &mut trace.metadata]
        .into_iter()
        .flatten()
    {
        n += fix_json(value);
    }
    for text in [&mut trace.session_id, &mut trace.user_id]
        .into_iter()
        .flatten()
    {
        n += fix_string(text);
    }
    for tag in &mut trace.tags {
        n += fix_string(tag);
    }
    for span in &mut trace.spans {
        n += fix_string(&mut span.name);
        for text in [&mut span.model, &mut span.error].into_iter().flatten() {
            n += fix_string(text);
        }
        for value in [
            &mut span.input,
            &mut span.output,
            &mut span.token_usage,
            &mut span.metadata,
            &mut span.model_parameters,
            &mut span.cost,
        ]
        .into_iter()
        .flatten()
        {
            n += fix_json(value);
        }
    }
    n
}

fn fix_string(text: &mut String) -> u64 {
    // The common case, no NUL, costs one scan and no allocation.
    if !text.contains('\0') {
        return 0;
    }
    let n = text.matches('\0').count() as u64;
    *text = text.replace('\0', REPLACEMENT);
    n
}

fn fix_json(value: &mut Value) -> u64 {
    match value {
        Value::String(text) => fix_string(text),
        Value::Array(items) => items.iter_mut().map(fix_json).sum(),
        Value::Object(map) => {
            let mut n: u64 = map.values_mut().map(fix_json).sum();
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                let mut fixed = Map::with_capacity(old.len());
                for (mut key, v) in old {
                    n += fix_string(&mut key);
                    fixed.insert(key, v);
                }
                *map = fixed;
            }
            n
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_data::{SpanData, SpanKind, TraceStatus};
    use serde_json::json;
    use std::time::SystemTime;
    use uuid::Uuid;

    fn trace() -> TraceData {
        TraceData {
            trace_id: Uuid::nil(),
            name: "t\0".into(),
            status: TraceStatus::Completed,
            started_at: SystemTime::now(),
            ended_at: None,
            input: Some(json!({"messages": [{"content": "a\0b\0"}]})),
            output: None,
            metadata: Some(json!({"k\0": "v"})),
            session_id: Some("s\0".into()),
            user_id: None,
            tags: vec!["ok".into(), "\0".into()],
            spans: vec![SpanData::new(
                Uuid::nil(),
                None,
                "span\0".into(),
                SpanKind::Llm,
            )],
        }
    }

    #[test]
    fn every_nul_in_every_place_is_replaced_and_counted() {
        let mut t = trace();
        t.spans[0].error = Some("\0".into());
        t.spans[0].cost = Some(json!({"\0": 1.0}));
        assert_eq!(replace_nul(&mut t), 9);
        assert_eq!(t.name, "t\u{FFFD}");
        assert_eq!(
            t.input,
            Some(json!({"messages": [{"content": "a\u{FFFD}b\u{FFFD}"}]}))
        );
        assert_eq!(t.metadata, Some(json!({"k\u{FFFD}": "v"})));
        assert_eq!(t.tags, ["ok", "\u{FFFD}"]);
        assert_eq!(t.spans[0].name, "span\u{FFFD}");
        assert_eq!(t.spans[0].cost, Some(json!({"\u{FFFD}": 1.0})));
        assert_eq!(replace_nul(&mut t), 0, "nothing left to replace");
    }
}
