//! The real server's `traces` and `spans` tables and its upserts (`trace_repo.py`), and the
//! trace as `GET /traces/{trace_id}` returns it.
//!
//! On conflict, as measured: `name`, `status`/`kind` and `started_at` take the new value;
//! `jsonb` columns (`input`, `output`, `token_usage`, `model_parameters`, `cost`) too, an
//! absent one becoming `null` (SQLAlchemy binds Python `None` as JSON `null`, which
//! `coalesce` keeps); the other columns (`ended_at`, `model`, `error`, …) keep the old value
//! when the new one is absent; `metadata` is merged (new keys win); tags become the sorted
//! union; a span keeps its first `trace_id` and `parent_span_id`.

use std::collections::HashMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::jsonb;
use crate::timestamp::Timestamp;

/// A stored trace.
#[derive(Debug)]
struct TraceRow {
    project: String,
    name: Value,
    status: Value,
    input: Value,
    output: Value,
    metadata: Map<String, Value>,
    started_at: Option<Timestamp>,
    ended_at: Option<Timestamp>,
    session_id: Value,
    user_id: Value,
    tags: Vec<String>,
    environment: Value,
    release: Value,
    /// Spans whose `trace_id` is this trace, in insertion order.
    spans: Vec<Uuid>,
}

/// A stored span.
#[derive(Debug)]
struct SpanRow {
    trace_id: Uuid,
    parent_span_id: Option<Uuid>,
    name: Value,
    kind: Value,
    status: Value,
    input: Value,
    output: Value,
    model: Value,
    token_usage: Value,
    metadata: Map<String, Value>,
    started_at: Option<Timestamp>,
    ended_at: Option<Timestamp>,
    error: Value,
    completion_start_time: Option<Timestamp>,
    model_parameters: Value,
    cost: Value,
}

/// A JSON document whose object keys keep the order the real server writes them in.
#[derive(Debug)]
pub(crate) enum Doc {
    Object(Vec<(&'static str, Doc)>),
    Array(Vec<Doc>),
    /// Any JSON, its objects written in `jsonb` order.
    Json(Value),
}

impl Doc {
    /// Compact JSON, as the real server sends it.
    pub(crate) fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Doc::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    jsonb::write_str(key, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
            Doc::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Doc::Json(value) => jsonb::write(value, out),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Doc::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_value()))
                    .collect(),
            ),
            Doc::Array(items) => Value::Array(items.iter().map(Doc::to_value).collect()),
            Doc::Json(value) => value.clone(),
        }
    }
}

/// A token count that is not an integer: the database fails the `GET` query.
#[derive(Debug, PartialEq, Eq)]
struct ReadFailed;

/// A stored trace as `GET` returns it.
#[derive(Debug)]
pub(crate) struct TraceRead {
    pub(crate) doc: Doc,
    /// `GET` gets a `500` instead (`doc` then counts the bad tokens as 0).
    pub(crate) fails: bool,
}

/// The database: projects, traces and spans.
#[derive(Debug, Default)]
pub(crate) struct TraceDb {
    projects: HashMap<String, Uuid>,
    traces: HashMap<Uuid, TraceRow>,
    spans: HashMap<Uuid, SpanRow>,
}

fn field(map: &Map<String, Value>, name: &str) -> Value {
    map.get(name).cloned().unwrap_or(Value::Null)
}

fn json_field(map: &Map<String, Value>, name: &str) -> Value {
    map.get(name).map_or(Value::Null, jsonb::round_trip)
}

fn object_field(map: &Map<String, Value>, name: &str) -> Map<String, Value> {
    match json_field(map, name) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn time_field(map: &Map<String, Value>, name: &str) -> Option<Timestamp> {
    map.get(name).and_then(Timestamp::from_json)
}

fn uuid_field(map: &Map<String, Value>, name: &str) -> Option<Uuid> {
    map.get(name)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

fn or_default(map: &Map<String, Value>, name: &str, default: &str) -> Value {
    match map.get(name) {
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::String(default.to_owned()),
    }
}

/// `coalesce(new, old)`.
fn coalesce<T>(old: &mut Option<T>, new: Option<T>) {
    if new.is_some() {
        *old = new;
    }
}

fn coalesce_value(old: &mut Value, new: Value) {
    if !new.is_null() {
        *old = new;
    }
}

fn tags_of(map: &Map<String, Value>) -> Vec<String> {
    map.get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

impl TraceDb {
    /// The span id a span without one gets (pydantic's `default_factory=uuid4`).
    pub(crate) fn span_id_of(span: &Map<String, Value>) -> Uuid {
        uuid_field(span, "span_id").unwrap_or_else(Uuid::new_v4)
    }

    /// Whether the trace is stored under `project` (`None`: under any project).
    pub(crate) fn has_trace(&self, trace_id: &Uuid, project: Option<&str>) -> bool {
        self.traces
            .get(trace_id)
            .is_some_and(|t| project.is_none_or(|p| p == t.project))
    }

    /// A worker's upsert of one `POST /traces` body (already validated).
    pub(crate) fn upsert_trace(&mut self, project: &str, trace_id: Uuid, body: &Value) {
        let Value::Object(map) = body else { return };
        let started_at = time_field(map, "started_at");
        let status = or_default(map, "status", "COMPLETED");
        match self.traces.get_mut(&trace_id) {
            Some(row) => {
                row.name = field(map, "name");
                row.status = status;
                row.input = json_field(map, "input");
                row.output = json_field(map, "output");
                row.metadata.extend(object_field(map, "metadata"));
                row.started_at = started_at;
                coalesce(&mut row.ended_at, time_field(map, "ended_at"));
                for (column, name) in [
                    (&mut row.session_id, "session_id"),
                    (&mut row.user_id, "user_id"),
                    (&mut row.environment, "environment"),
                    (&mut row.release, "release"),
                ] {
                    coalesce_value(column, field(map, name));
                }
                // array_agg(DISTINCT …) over both, in the database's C collation.
                let new = tags_of(map);
                if !(row.tags.is_empty() && new.is_empty()) {
                    row.tags.extend(new);
                    row.tags
                        .sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                    row.tags.dedup();
                }
            }
            None => {
                self.projects
                    .entry(project.to_owned())
                    .or_insert_with(Uuid::new_v4);
                self.traces.insert(
                    trace_id,
                    TraceRow {
                        project: project.to_owned(),
                        name: field(map, "name"),
                        status,
                        input: json_field(map, "input"),
                        output: json_field(map, "output"),
                        metadata: object_field(map, "metadata"),
                        started_at,
                        ended_at: time_field(map, "ended_at"),
                        session_id: field(map, "session_id"),
                        user_id: field(map, "user_id"),
                        tags: tags_of(map),
                        environment: field(map, "environment"),
                        release: field(map, "release"),
                        spans: Vec::new(),
                    },
                );
            }
        }
        let spans = map.get("spans").and_then(Value::as_array);
        for span in spans.into_iter().flatten() {
            if let Value::Object(span) = span {
                self.upsert_span(trace_id, Self::span_id_of(span), span);
            }
        }
    }

    /// `POST /traces/{trace_id}/spans`: spans already validated, each with its `span_id`.
    pub(crate) fn add_spans(&mut self, trace_id: Uuid, spans: &[Value]) {
        for span in spans {
            if let Value::Object(span) = span {
                self.upsert_span(trace_id, Self::span_id_of(span), span);
            }
        }
    }

    fn upsert_span(&mut self, trace_id: Uuid, span_id: Uuid, map: &Map<String, Value>) {
        let cost = map.get("cost").map_or(Value::Null, jsonb::floats);
        if let Some(row) = self.spans.get_mut(&span_id) {
            row.name = field(map, "name");
            row.kind = or_default(map, "kind", "OTHER");
            row.status = or_default(map, "status", "UNSET");
            row.input = json_field(map, "input");
            row.output = json_field(map, "output");
            coalesce_value(&mut row.model, field(map, "model"));
            row.token_usage = json_field(map, "token_usage");
            row.metadata.extend(object_field(map, "metadata"));
            row.started_at = time_field(map, "started_at");
            coalesce(&mut row.ended_at, time_field(map, "ended_at"));
            coalesce_value(&mut row.error, field(map, "error"));
            coalesce(
                &mut row.completion_start_time,
                time_field(map, "completion_start_time"),
            );
            row.model_parameters = json_field(map, "model_parameters");
            row.cost = cost;
            return;
        }
        if let Some(trace) = self.traces.get_mut(&trace_id) {
            trace.spans.push(span_id);
        }
        self.spans.insert(
            span_id,
            SpanRow {
                trace_id,
                parent_span_id: uuid_field(map, "parent_span_id"),
                name: field(map, "name"),
                kind: or_default(map, "kind", "OTHER"),
                status: or_default(map, "status", "UNSET"),
                input: json_field(map, "input"),
                output: json_field(map, "output"),
                model: field(map, "model"),
                token_usage: json_field(map, "token_usage"),
                metadata: object_field(map, "metadata"),
                started_at: time_field(map, "started_at"),
                ended_at: time_field(map, "ended_at"),
                error: field(map, "error"),
                completion_start_time: time_field(map, "completion_start_time"),
                model_parameters: json_field(map, "model_parameters"),
                cost,
            },
        );
    }

    /// The trace as `GET /traces/{trace_id}` returns it, when it is stored under `project`
    /// (`None`: any project).
    pub(crate) fn read(&self, trace_id: &Uuid, project: Option<&str>) -> Option<TraceRead> {
        let trace = self.traces.get(trace_id)?;
        if project.is_some_and(|p| p != trace.project) {
            return None;
        }
        let mut spans: Vec<(&Uuid, &SpanRow)> = trace
            .spans
            .iter()
            .filter_map(|id| self.spans.get(id).map(|row| (id, row)))
            .collect();
        // The relationship's `order_by`: started_at, then span_id.
        spans.sort_by_key(|(id, row)| (row.started_at, **id));
        let mut tokens: i64 = 0;
        let mut fails = false;
        let mut cost = 0.0_f64;
        for (_, span) in &spans {
            let counts = (
                token_count(&span.token_usage, "prompt_tokens"),
                token_count(&span.token_usage, "completion_tokens"),
            );
            match counts {
                (Ok(prompt), Ok(completion)) => tokens += prompt + completion,
                _ => fails = true,
            }
            cost += span
                .cost
                .get("total")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
        }
        let project_id = self.projects.get(&trace.project).copied();
        let doc = Doc::Object(vec![
            ("trace_id", uuid_json(Some(*trace_id))),
            ("project_id", uuid_json(project_id)),
            ("name", Doc::Json(trace.name.clone())),
            ("status", Doc::Json(trace.status.clone())),
            ("input", Doc::Json(trace.input.clone())),
            ("output", Doc::Json(trace.output.clone())),
            ("metadata", Doc::Json(Value::Object(trace.metadata.clone()))),
            ("started_at", time_json(trace.started_at)),
            ("ended_at", time_json(trace.ended_at)),
            ("session_id", Doc::Json(trace.session_id.clone())),
            ("user_id", Doc::Json(trace.user_id.clone())),
            ("tags", Doc::Json(trace.tags.clone().into())),
            ("environment", Doc::Json(trace.environment.clone())),
            ("release", Doc::Json(trace.release.clone())),
            (
                "spans",
                Doc::Array(spans.iter().map(|(id, s)| span_doc(**id, s)).collect()),
            ),
            ("total_tokens", Doc::Json(tokens.into())),
            ("total_cost", Doc::Json(float_json(cost))),
        ]);
        Some(TraceRead { doc, fails })
    }
}

/// `cast(token_usage ->> key as integer)`, `NULL` counted as 0; anything else fails the query.
fn token_count(usage: &Value, key: &str) -> Result<i64, ReadFailed> {
    match usage.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| i32::try_from(*n).is_ok())
            .ok_or(ReadFailed),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i32>()
            .map(i64::from)
            .map_err(|_| ReadFailed),
        Some(_) => Err(ReadFailed),
    }
}

fn float_json(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn uuid_json(id: Option<Uuid>) -> Doc {
    Doc::Json(id.map_or(Value::Null, |id| Value::String(id.to_string())))
}

fn time_json(t: Option<Timestamp>) -> Doc {
    Doc::Json(t.map_or(Value::Null, |t| Value::String(t.isoformat())))
}

fn span_doc(span_id: Uuid, s: &SpanRow) -> Doc {
    let since_start = |t: Option<Timestamp>| match (s.started_at, t) {
        (Some(start), Some(t)) => Doc::Json(float_json(t.millis_since(start))),
        _ => Doc::Json(Value::Null),
    };
    Doc::Object(vec![
        ("span_id", uuid_json(Some(span_id))),
        ("trace_id", uuid_json(Some(s.trace_id))),
        ("parent_span_id", uuid_json(s.parent_span_id)),
        ("name", Doc::Json(s.name.clone())),
        ("kind", Doc::Json(s.kind.clone())),
        ("status", Doc::Json(s.status.clone())),
        ("input", Doc::Json(s.input.clone())),
        ("output", Doc::Json(s.output.clone())),
        ("model", Doc::Json(s.model.clone())),
        ("token_usage", Doc::Json(s.token_usage.clone())),
        ("metadata", Doc::Json(Value::Object(s.metadata.clone()))),
        ("started_at", time_json(s.started_at)),
        ("ended_at", time_json(s.ended_at)),
        ("error", Doc::Json(s.error.clone())),
        ("completion_start_time", time_json(s.completion_start_time)),
        ("model_parameters", Doc::Json(s.model_parameters.clone())),
        ("cost", Doc::Json(s.cost.clone())),
        ("latency_ms", since_start(s.ended_at)),
        (
            "time_to_first_token_ms",
            since_start(s.completion_start_time),
        ),
    ])
}
