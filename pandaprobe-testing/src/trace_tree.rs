//! A stored trace drawn as a tree, one line per span, for logs and examples.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Draws a trace as [`TestServer::stored_trace`](crate::TestServer::stored_trace) returns it:
/// the trace on the first line, then each span under its parent in start order, with its kind,
/// model, token counts, duration and status.
///
/// ```text
/// agent-run  COMPLETED  412 ms  3 spans
/// ├─ openai-chat  LLM  fake-model  12+5 tokens  3 ms  OK
/// ├─ get_weather  TOOL  0 ms  UNSET
/// └─ openai-chat  LLM  fake-model  12+8 tokens  2 ms  OK
/// ```
pub fn trace_tree(trace: &Value) -> String {
    let spans: Vec<&Value> = trace["spans"]
        .as_array()
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    let mut out = String::new();
    let _ = write!(out, "{}  {}", text(&trace["name"]), text(&trace["status"]));
    if let Some(ms) = duration_ms(trace) {
        let _ = write!(out, "  {ms} ms");
    }
    let _ = writeln!(out, "  {} spans", spans.len());

    let ids: Vec<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let mut children: HashMap<Option<&str>, Vec<&Value>> = HashMap::new();
    for span in &spans {
        // A parent that is not in the trace would hide the span: draw it at the top instead.
        let parent = span["parent_span_id"].as_str().filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|span| at(span, "started_at"));
    }
    draw(&children, None, "", &mut out, 0);
    out
}

fn draw(
    children: &HashMap<Option<&str>, Vec<&Value>>,
    parent: Option<&str>,
    prefix: &str,
    out: &mut String,
    depth: usize,
) {
    // The server caps a trace at a few hundred spans; the cap on depth only guards a cycle.
    if depth > 64 {
        return;
    }
    let Some(list) = children.get(&parent) else {
        return;
    };
    for (i, span) in list.iter().enumerate() {
        let last = i + 1 == list.len();
        let _ = write!(
            out,
            "{prefix}{}{}  {}",
            if last { "└─ " } else { "├─ " },
            text(&span["name"]),
            text(&span["kind"])
        );
        if let Some(model) = span["model"].as_str() {
            let _ = write!(out, "  {model}");
        }
        let usage = &span["token_usage"];
        if let (Some(p), Some(c)) = (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64(),
        ) {
            let _ = write!(out, "  {p}+{c} tokens");
        }
        if let Some(ms) = duration_ms(span) {
            let _ = write!(out, "  {ms} ms");
        }
        let _ = write!(out, "  {}", text(&span["status"]));
        if let Some(error) = span["error"].as_str() {
            let _ = write!(out, ": {error}");
        }
        out.push('\n');
        let next = format!("{prefix}{}", if last { "   " } else { "│  " });
        draw(children, span["span_id"].as_str(), &next, out, depth + 1);
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

fn at(record: &Value, key: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(record[key].as_str()?, &Rfc3339).ok()
}

fn duration_ms(record: &Value) -> Option<i128> {
    let elapsed = at(record, "ended_at")? - at(record, "started_at")?;
    Some(elapsed.whole_milliseconds())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spans_hang_under_their_parents_in_start_order() {
        let trace = json!({
            "name": "run", "status": "COMPLETED",
            "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:00:01Z",
            "spans": [
                {"span_id": "b", "parent_span_id": "a", "name": "tool", "kind": "TOOL",
                 "status": "ERROR", "error": "boom", "started_at": "2026-01-01T00:00:00.2Z"},
                {"span_id": "a", "name": "agent", "kind": "AGENT", "status": "OK",
                 "started_at": "2026-01-01T00:00:00Z"},
                {"span_id": "c", "parent_span_id": "a", "name": "chat", "kind": "LLM",
                 "model": "m", "token_usage": {"prompt_tokens": 3, "completion_tokens": 5},
                 "status": "OK", "started_at": "2026-01-01T00:00:00.1Z",
                 "ended_at": "2026-01-01T00:00:00.15Z"},
                {"span_id": "d", "parent_span_id": "gone", "name": "orphan", "kind": "OTHER",
                 "status": "UNSET", "started_at": "2026-01-01T00:00:00.5Z"},
            ],
        });
        let expected = "run  COMPLETED  1000 ms  4 spans\n\
                        ├─ agent  AGENT  OK\n\
                        │  ├─ chat  LLM  m  3+5 tokens  50 ms  OK\n\
                        │  └─ tool  TOOL  ERROR: boom\n\
                        └─ orphan  OTHER  UNSET\n";
        assert_eq!(trace_tree(&trace), expected);
    }

    #[test]
    fn anything_that_is_not_a_trace_still_draws() {
        assert_eq!(trace_tree(&json!(null)), "?  ?  0 spans\n");
        assert_eq!(trace_tree(&json!({"spans": "x"})), "?  ?  0 spans\n");
    }
}
