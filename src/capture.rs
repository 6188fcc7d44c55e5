//! In-memory capture, for tests of code that scores and traces: a client built with
//! [`ClientBuilder::capture`](crate::ClientBuilder::capture) runs the whole pipeline (checks,
//! queue, worker, batching, the trace gate, the byte budget) but answers its own requests as a
//! server that stores everything at once would, and keeps what it would have sent. No thread
//! listens, nothing goes on the network, no key is needed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use uuid::Uuid;

/// What a capturing client would have sent: every score, and every trace with all its spans
/// (those added past the first 500 included), as the JSON bodies the server would get.
///
/// ```
/// use std::time::Duration;
/// use pandaprobe::{Capture, Client, Score, SpanKind};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let capture = Capture::new();
/// let client = Client::builder().capture(&capture).build()?;
/// let trace = client.start_trace("agent");
/// trace.span("search", SpanKind::Tool).end();
/// trace.score(Score::numeric(trace.trace_id(), "relevance", 0.9))?;
/// trace.end();
/// client.flush(Duration::from_secs(5))?;
///
/// let sent = capture.trace(trace.trace_id()).expect("captured");
/// assert_eq!(sent["name"], "agent");
/// assert_eq!(sent["spans"][0]["name"], "search");
/// assert_eq!(capture.scores()[0]["name"], "relevance");
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Capture {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    scores: Vec<Value>,
    /// In the order they were first sent.
    traces: Vec<Value>,
    by_id: HashMap<Uuid, usize>,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let captured = self.lock();
        f.debug_struct("Capture")
            .field("scores", &captured.scores.len())
            .field("traces", &captured.traces.len())
            .finish()
    }
}

/// How the capture answers a request.
pub(crate) enum Answer {
    Stored,
    NotFound,
}

impl Capture {
    /// An empty capture; hand it to [`ClientBuilder::capture`](crate::ClientBuilder::capture).
    pub fn new() -> Capture {
        Capture::default()
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every score sent so far, in order, as its JSON body.
    pub fn scores(&self) -> Vec<Value> {
        self.lock().scores.clone()
    }

    /// Every trace sent so far, in the order first sent, with all its spans.
    pub fn traces(&self) -> Vec<Value> {
        self.lock().traces.clone()
    }

    /// The trace with this id, with all its spans, if it was sent.
    pub fn trace(&self, trace_id: Uuid) -> Option<Value> {
        let captured = self.lock();
        let at = *captured.by_id.get(&trace_id)?;
        captured.traces.get(at).cloned()
    }

    /// Forgets everything captured so far.
    pub fn clear(&self) {
        *self.lock() = Captured::default();
    }

    /// A score's body.
    pub(crate) fn score(&self, body: &[u8]) -> Answer {
        if let Ok(score) = serde_json::from_slice(body) {
            self.lock().scores.push(score);
        }
        Answer::Stored
    }

    /// A trace's body: stored at once (sent again, it replaces the first, keeping added spans,
    /// as the server's upsert does).
    pub(crate) fn trace_sent(&self, body: &[u8]) -> Answer {
        let Ok(trace) = serde_json::from_slice::<Value>(body) else {
            return Answer::Stored;
        };
        let Some(id) = trace_id(&trace) else {
            return Answer::Stored;
        };
        let mut captured = self.lock();
        match captured.by_id.get(&id).copied() {
            Some(at) => {
                // The new body wins, its spans over the old ones; spans only the old had stay.
                let mut trace = trace;
                let new_spans = match trace.as_object_mut().and_then(|t| t.remove("spans")) {
                    Some(Value::Array(spans)) => spans,
                    _ => Vec::new(),
                };
                let old = std::mem::replace(&mut captured.traces[at], trace);
                if let Some(spans) = old.get("spans").and_then(Value::as_array) {
                    upsert_spans(&mut captured.traces[at], spans);
                }
                upsert_spans(&mut captured.traces[at], &new_spans);
            }
            None => {
                let at = captured.traces.len();
                captured.traces.push(trace);
                captured.by_id.insert(id, at);
            }
        }
        Answer::Stored
    }

    /// Spans added to a trace (`POST /traces/{id}/spans`): upserted by span id.
    pub(crate) fn spans_added(&self, trace_id: Uuid, body: &[u8]) -> Answer {
        let mut captured = self.lock();
        let Some(at) = captured.by_id.get(&trace_id).copied() else {
            return Answer::NotFound;
        };
        if let Ok(Value::Array(spans)) = serde_json::from_slice::<Value>(body) {
            upsert_spans(&mut captured.traces[at], &spans);
        }
        Answer::Stored
    }

    /// Whether a trace was sent (`GET /traces/{id}`).
    pub(crate) fn has_trace(&self, trace_id: Uuid) -> Answer {
        match self.lock().by_id.contains_key(&trace_id) {
            true => Answer::Stored,
            false => Answer::NotFound,
        }
    }
}

fn trace_id(trace: &Value) -> Option<Uuid> {
    trace.get("trace_id")?.as_str()?.parse().ok()
}

/// Adds `spans` to `trace`'s, replacing those with the same `span_id`.
fn upsert_spans(trace: &mut Value, spans: &[Value]) {
    let Some(object) = trace.as_object_mut() else {
        return;
    };
    let list = object
        .entry("spans")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = list.as_array_mut() else {
        return;
    };
    for span in spans {
        let id = span.get("span_id");
        match list.iter_mut().find(|s| s.get("span_id") == id) {
            Some(existing) => *existing = span.clone(),
            None => list.push(span.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spans_are_upserted_and_a_resent_trace_keeps_added_ones() {
        let capture = Capture::new();
        let id = Uuid::new_v4();
        let trace = json!({"trace_id": id.to_string(), "name": "t", "spans": [{"span_id": "a"}]});
        capture.trace_sent(trace.to_string().as_bytes());
        assert!(matches!(capture.has_trace(id), Answer::Stored));
        assert!(matches!(capture.has_trace(Uuid::nil()), Answer::NotFound));
        let added = json!([{"span_id": "b"}, {"span_id": "a", "name": "again"}]);
        assert!(matches!(
            capture.spans_added(id, added.to_string().as_bytes()),
            Answer::Stored
        ));
        let again = json!({"trace_id": id.to_string(), "name": "t2"});
        capture.trace_sent(again.to_string().as_bytes());
        let stored = capture.trace(id).expect("captured");
        assert_eq!(stored["name"], "t2");
        let ids: Vec<&str> = stored["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .filter_map(|s| s["span_id"].as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(stored["spans"][0]["name"], "again", "the later body wins");
        assert!(matches!(
            capture.spans_added(Uuid::nil(), b"[]"),
            Answer::NotFound
        ));
        capture.score(br#"{"name":"s"}"#);
        assert_eq!(capture.scores().len(), 1);
        capture.clear();
        assert!(capture.traces().is_empty() && capture.scores().is_empty());
    }
}
