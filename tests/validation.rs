//! Validation at the call: `score()` refuses exactly what the server refuses or fails on, with
//! a `ScoreError` that names the rule, before anything is queued, sent or counted; everything
//! the server stores is accepted and sent exactly as given (`" 0.5"`, `"0.2_5"`, `"٠.٥"`,
//! `"TRUE"`, an empty name or label). A property test holds the SDK to that against the
//! contract-checking test server, which serves as the oracle.
//!
//! `QueueFull` and `ShutDown`, which are counted as drops, are in `delivery.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{client_for, lenient_server, PROJECT, TRACE_ID, WAIT};
use pandaprobe::{Client, IntoTraceId, Score, ScoreDataType, ScoreError, Stats, Uuid};
use pandaprobe_testing::{TestServer, SCORES_PATH};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// The server's column width for names and values (longer gives a 500).
const COLUMN: usize = 255;

// ---------------------------------------------------------------------------------------------
// Refused at the call
// ---------------------------------------------------------------------------------------------

#[test]
fn every_invalid_score_is_refused_at_the_call_and_nothing_is_sent_or_counted() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let t = TRACE_ID;
    let long = "n".repeat(256);
    // (score, expected error, fragments its message must contain)
    let cases: Vec<(Score, ScoreError, &[&str])> = vec![
        (
            Score::new("not-a-uuid", "n", "0.5"),
            ScoreError::InvalidTraceId("not-a-uuid".into()),
            &["not-a-uuid", "UUID"],
        ),
        (
            Score::numeric(String::new(), "n", 0.5),
            ScoreError::InvalidTraceId(String::new()),
            &["UUID"],
        ),
        (
            Score::new(t, long.clone(), "0.5"),
            ScoreError::NameTooLong(256),
            &["name", "256", "255"],
        ),
        (
            Score::new(t, "é".repeat(256), "0.5"),
            ScoreError::NameTooLong(256),
            &["256", "255"],
        ),
        (
            Score::categorical(t, "n", "v".repeat(300)),
            ScoreError::ValueTooLong(300),
            &["value", "300", "255"],
        ),
        (
            Score::new(t, "n", format!("0.{}", "0".repeat(254))),
            ScoreError::ValueTooLong(256),
            &["value", "256"],
        ),
        (
            Score::new(t, "n", "1.5"),
            ScoreError::InvalidNumeric("1.5".into()),
            &["NUMERIC", "1.5", "between 0 and 1"],
        ),
        (
            Score::numeric(t, "n", 1.5),
            ScoreError::InvalidNumeric("1.5".into()),
            &["1.5", "between 0 and 1"],
        ),
        (
            Score::numeric(t, "n", -0.1),
            ScoreError::InvalidNumeric("-0.1".into()),
            &["-0.1"],
        ),
        (
            Score::new(t, "n", "nan"),
            ScoreError::InvalidNumeric("nan".into()),
            &["nan"],
        ),
        (
            Score::numeric(t, "n", f64::NAN),
            ScoreError::InvalidNumeric("NaN".into()),
            &["NaN"],
        ),
        (
            Score::numeric(t, "n", f64::INFINITY),
            ScoreError::InvalidNumeric("inf".into()),
            &["inf"],
        ),
        (
            Score::new(t, "n", "abc"),
            ScoreError::InvalidNumeric("abc".into()),
            &["abc", "number"],
        ),
        (
            Score::new(t, "n", ""),
            ScoreError::InvalidNumeric(String::new()),
            &["NUMERIC"],
        ),
        (
            Score::new(t, "n", "0__5"),
            ScoreError::InvalidNumeric("0__5".into()),
            &["0__5"],
        ),
        (
            Score::new(t, "n", "_0.5"),
            ScoreError::InvalidNumeric("_0.5".into()),
            &["_0.5"],
        ),
        (
            Score::boolean(t, "n", true).data_type(ScoreDataType::Numeric),
            ScoreError::InvalidNumeric("true".into()),
            &["true"],
        ),
        (
            Score::new(t, "n", "yes").data_type(ScoreDataType::Boolean),
            ScoreError::InvalidBoolean("yes".into()),
            &["BOOLEAN", "yes", "true or false"],
        ),
        (
            Score::new(t, "n", " true").data_type(ScoreDataType::Boolean),
            ScoreError::InvalidBoolean(" true".into()),
            &["\" true\""],
        ),
        (
            Score::new(t, "n", "false\n").data_type(ScoreDataType::Boolean),
            ScoreError::InvalidBoolean("false\n".into()),
            &["BOOLEAN"],
        ),
        (
            Score::categorical(t, "n", "x").metadata(json!([1, 2])),
            ScoreError::MetadataNotObject("an array"),
            &["metadata", "JSON object", "array"],
        ),
        (
            Score::categorical(t, "n", "x").metadata(Value::Null),
            ScoreError::MetadataNotObject("null"),
            &["metadata", "JSON object", "null"],
        ),
        (
            Score::numeric(t, "n", 0.5).metadata(json!(42)),
            ScoreError::MetadataNotObject("a number"),
            &["JSON object", "number"],
        ),
        (
            Score::numeric(t, "n", 0.5).metadata(json!("text")),
            ScoreError::MetadataNotObject("a string"),
            &["JSON object", "string"],
        ),
        (
            Score::numeric(t, "n", 0.5).metadata(json!(true)),
            ScoreError::MetadataNotObject("a boolean"),
            &["JSON object", "boolean"],
        ),
        (
            Score::new(t, "a\0b", "0.5"),
            ScoreError::NulCharacter("name"),
            &["name", "NUL"],
        ),
        (
            Score::categorical(t, "n", "\0"),
            ScoreError::NulCharacter("value"),
            &["value", "NUL"],
        ),
        (
            Score::numeric(t, "n", 0.5).reason("why\0"),
            ScoreError::NulCharacter("reason"),
            &["reason", "NUL"],
        ),
        (
            Score::numeric(t, "n", 0.5).metadata(json!({"k": ["ok", {"deep": "\0"}]})),
            ScoreError::NulCharacter("metadata"),
            &["metadata", "NUL"],
        ),
        (
            Score::numeric(t, "n", 0.5).metadata(json!({"k\0": 1})),
            ScoreError::NulCharacter("metadata"),
            &["metadata", "NUL"],
        ),
    ];
    for (score, expected, fragments) in cases {
        let described = format!("{score:?}");
        // The same rules, and the same error, through `to_body`.
        assert_eq!(score.to_body().err(), Some(expected.clone()), "{described}");
        let err = client
            .score(score)
            .expect_err(&format!("invalid score accepted: {described}"));
        assert_eq!(err, expected, "{described}");
        let message = err.to_string();
        for fragment in fragments {
            assert!(
                message.contains(fragment),
                "message {message:?} lacks {fragment:?} ({described})"
            );
        }
        // A std::error::Error a caller can box and propagate with `?`.
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
        assert_eq!(boxed.to_string(), message);
    }

    client.flush(WAIT).expect("flush with nothing queued");
    assert_eq!(server.request_count(), 0, "an invalid score was sent");
    assert_eq!(
        client.stats(),
        Stats::default(),
        "refused scores are not counted"
    );
    client.shutdown(WAIT).expect("clean shutdown");
    assert_eq!(server.request_count(), 0, "shutdown sent nothing either");
}

/// `Trace::score` validates at the call too, and puts the trace's id on the score (even over
/// an invalid one).
#[test]
fn an_invalid_score_through_a_trace_is_refused_at_the_call() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let trace = client.start_trace("invalid-scores");
    let id = trace.trace_id();
    let cases = [
        (
            Score::numeric(id, "q", 1.5),
            ScoreError::InvalidNumeric("1.5".into()),
        ),
        (
            Score::new(id, "b", "yes").data_type(ScoreDataType::Boolean),
            ScoreError::InvalidBoolean("yes".into()),
        ),
        (
            Score::categorical(id, "c", "x").metadata(json!([1])),
            ScoreError::MetadataNotObject("an array"),
        ),
        (
            Score::categorical(id, "c\0", "x"),
            ScoreError::NulCharacter("name"),
        ),
    ];
    for (score, expected) in cases {
        assert_eq!(trace.score(score), Err(expected));
    }
    assert_eq!(
        client.stats().scores.accepted,
        0,
        "refused scores are not counted"
    );
    trace
        .score(Score::numeric("not-a-uuid", "replaced", 0.5))
        .expect("the trace's id replaces the score's");
    trace.end();
    client.flush(WAIT).expect("flush");

    let scores = server.scores();
    assert_eq!(scores.len(), 1);
    assert_eq!(scores[0].body["trace_id"], id.to_string());
    assert_eq!(scores[0].body["name"], "replaced");
    let stats = client.stats();
    common::assert_all_sent(&stats.scores, 1);
    common::assert_all_sent(&stats.traces, 1);
}

// ---------------------------------------------------------------------------------------------
// Accepted edge values, stored as given
// ---------------------------------------------------------------------------------------------

/// Values at the edges of the server's rules are accepted, answered 201 (never 422 or 500) and
/// stored exactly as given: no trimming, no lowercasing, no reformatting.
#[test]
fn edge_values_the_server_accepts_are_stored_as_given() {
    let server = lenient_server();
    let client = client_for(&server).build().expect("client");
    let t = TRACE_ID;
    let boolean = |name: &str, v: &str| Score::new(t, name, v).data_type(ScoreDataType::Boolean);
    // (score, the value the server must store)
    let edge: Vec<(Score, String)> = vec![
        (Score::new(t, "", "0.5"), "0.5".into()),
        (Score::categorical(t, "empty_label", ""), String::new()),
        (Score::new(t, "leading_space", " 0.5"), " 0.5".into()),
        (
            Score::new(t, "spaces_and_tab", "\t0.5 \n"),
            "\t0.5 \n".into(),
        ),
        (
            Score::new(t, "unicode_space", "\u{3000}0.5\u{a0}"),
            "\u{3000}0.5\u{a0}".into(),
        ),
        (Score::new(t, "underscore", "0.2_5"), "0.2_5".into()),
        (Score::new(t, "arabic_indic", "٠.٥"), "٠.٥".into()),
        (Score::new(t, "fullwidth", "０.５"), "０.５".into()),
        (Score::new(t, "minus_zero", "-0"), "-0".into()),
        (Score::new(t, "plus_half", "+.5"), "+.5".into()),
        (Score::new(t, "trailing_dot", "1."), "1.".into()),
        (Score::new(t, "zero", "0"), "0".into()),
        (Score::new(t, "one", "1"), "1".into()),
        (Score::new(t, "exponent", "1e-1"), "1e-1".into()),
        (Score::new(t, "upper_exponent", "5E-1"), "5E-1".into()),
        (boolean("upper_true", "TRUE"), "TRUE".into()),
        (boolean("mixed_false", "FaLsE"), "FaLsE".into()),
        (Score::boolean(t, "typed_false", false), "false".into()),
        (Score::numeric(t, "one_float", 1.0), "1".into()),
        (Score::numeric(t, "minus_zero_float", -0.0), "-0".into()),
        (Score::numeric(t, "tiny", 1e-7), "0.0000001".into()),
        // Its plain decimal form would be 302 characters, over the column: exponent form.
        (Score::numeric(t, "very_tiny", 1e-300), "1e-300".into()),
        (
            Score::numeric(t, "relabelled", 0.5).data_type(ScoreDataType::Categorical),
            "0.5".into(),
        ),
        (Score::new(t, "x".repeat(COLUMN), "0.5"), "0.5".into()),
        (Score::new(t, "é".repeat(COLUMN), "0.5"), "0.5".into()),
        (
            Score::categorical(t, "long_value", "v".repeat(COLUMN)),
            "v".repeat(COLUMN),
        ),
        (
            Score::categorical(t, "multibyte_value", "𝄞".repeat(COLUMN)),
            "𝄞".repeat(COLUMN),
        ),
        (
            Score::categorical(t, "empty_metadata", "x").metadata(json!({})),
            "x".into(),
        ),
        (
            Score::numeric(t, "empty_reason", 0.5).reason(""),
            "0.5".into(),
        ),
        (Score::new(Uuid::nil(), "nil_trace", "0.5"), "0.5".into()),
        (Score::new(Uuid::max(), "max_trace", "0.5"), "0.5".into()),
    ];
    let n = edge.len();
    let mut expected = std::collections::HashMap::new();
    for (score, value) in edge {
        let name = score.name().to_owned();
        client
            .score(score)
            .unwrap_or_else(|e| panic!("{name:?}: valid score refused: {e}"));
        assert!(expected.insert(name, value).is_none(), "names are unique");
    }
    client.flush(WAIT).expect("flush");
    assert_eq!(server.status_count(201), n, "{:#?}", server.requests());
    assert_eq!(server.request_count(), n);
    for stored in server.scores() {
        let name = stored.body["name"].as_str().expect("a name").to_owned();
        let value = expected.remove(&name).expect("a score that was sent");
        assert_eq!(stored.body["value"], value, "{name:?} stored as given");
    }
    assert!(expected.is_empty(), "never stored: {:?}", expected.keys());
    let stats = client.stats();
    common::assert_all_sent(&stats.scores, n as u64);
}

// ---------------------------------------------------------------------------------------------
// Any score: refused for a reason that holds, or stored as given
// ---------------------------------------------------------------------------------------------

/// How the trace id is handed to the score.
#[derive(Debug, Clone)]
enum TraceIn {
    /// A UUID, in one of its text forms (0-4) or as a `Uuid` (5).
    Id(Uuid, u8),
    /// Any text.
    Text(String),
}

impl TraceIn {
    fn text(&self) -> String {
        match self {
            TraceIn::Id(id, 0) => id.hyphenated().to_string(),
            TraceIn::Id(id, 1) => id.hyphenated().to_string().to_uppercase(),
            TraceIn::Id(id, 2) => id.simple().to_string(),
            TraceIn::Id(id, 3) => id.braced().to_string(),
            TraceIn::Id(id, _) => id.urn().to_string(),
            TraceIn::Text(text) => text.clone(),
        }
    }

    fn uuid(&self) -> Option<Uuid> {
        match self {
            TraceIn::Id(id, _) => Some(*id),
            TraceIn::Text(text) => Uuid::try_parse(text).ok(),
        }
    }
}

#[derive(Debug, Clone)]
enum ValueIn {
    /// `Score::new` (NUMERIC) or, when `categorical`, `Score::categorical`.
    Text { text: String, categorical: bool },
    /// `Score::numeric`.
    Number(f64),
    /// `Score::boolean`.
    Bool(bool),
}

#[derive(Debug, Clone)]
struct Input {
    trace: TraceIn,
    name: String,
    value: ValueIn,
    /// `.data_type(..)` over the constructor's type.
    data_type: Option<ScoreDataType>,
    reason: Option<String>,
    metadata: Option<Value>,
}

impl Input {
    fn score(&self) -> Score {
        fn make(trace: impl IntoTraceId, name: String, value: &ValueIn) -> Score {
            match value {
                ValueIn::Text {
                    text,
                    categorical: false,
                } => Score::new(trace, name, text.as_str()),
                ValueIn::Text {
                    text,
                    categorical: true,
                } => Score::categorical(trace, name, text.clone()),
                ValueIn::Number(n) => Score::numeric(trace, name, *n),
                ValueIn::Bool(b) => Score::boolean(trace, name, *b),
            }
        }
        let name = self.name.clone();
        let mut score = match &self.trace {
            TraceIn::Id(id, 5) => make(*id, name, &self.value),
            trace => make(trace.text(), name, &self.value),
        };
        if let Some(data_type) = self.data_type {
            score = score.data_type(data_type);
        }
        if let Some(reason) = &self.reason {
            score = score.reason(reason.as_str());
        }
        if let Some(metadata) = &self.metadata {
            score = score.metadata(metadata.clone());
        }
        score
    }

    fn data_type(&self) -> ScoreDataType {
        self.data_type.unwrap_or(match &self.value {
            ValueIn::Text {
                categorical: true, ..
            } => ScoreDataType::Categorical,
            ValueIn::Text { .. } | ValueIn::Number(_) => ScoreDataType::Numeric,
            ValueIn::Bool(_) => ScoreDataType::Boolean,
        })
    }

    /// The value as the contract wants it sent: a string, text exactly as given; a number in
    /// its shortest form, or exponent form where that would be long.
    fn wire_value(&self) -> String {
        match &self.value {
            ValueIn::Text { text, .. } => text.clone(),
            ValueIn::Number(n) if n.to_string().len() > 24 => format!("{n:e}"),
            ValueIn::Number(n) => n.to_string(),
            ValueIn::Bool(b) => b.to_string(),
        }
    }

    /// The body the server would get for this score, trace id as given when it is not a UUID.
    fn raw_body(&self) -> Vec<u8> {
        let mut body = Map::new();
        let trace_id = match self.trace.uuid() {
            Some(id) => id.hyphenated().to_string(),
            None => self.trace.text(),
        };
        body.insert("trace_id".into(), json!(trace_id));
        body.insert("name".into(), json!(self.name));
        body.insert("value".into(), json!(self.wire_value()));
        body.insert("data_type".into(), json!(self.data_type().as_str()));
        body.insert("source".into(), json!("PROGRAMMATIC"));
        if let Some(reason) = &self.reason {
            body.insert("reason".into(), json!(reason));
        }
        if let Some(metadata) = &self.metadata {
            body.insert("metadata".into(), metadata.clone());
        }
        serde_json::to_vec(&Value::Object(body)).expect("serialize")
    }

    /// Whether the refusal's stated reason holds for this input.
    fn reason_holds(&self, error: &ScoreError) -> bool {
        let wire = self.wire_value();
        let chars = |s: &str| s.chars().count();
        match error {
            ScoreError::InvalidTraceId(text) => {
                matches!(&self.trace, TraceIn::Text(t) if t == text) && self.trace.uuid().is_none()
            }
            ScoreError::NameTooLong(n) => *n == chars(&self.name) && *n > COLUMN,
            ScoreError::ValueTooLong(n) => *n == chars(&wire) && *n > COLUMN,
            ScoreError::InvalidNumeric(v) => {
                self.data_type() == ScoreDataType::Numeric
                    && match &self.value {
                        ValueIn::Number(n) => *v == n.to_string(),
                        _ => *v == wire,
                    }
            }
            ScoreError::InvalidBoolean(v) => {
                self.data_type() == ScoreDataType::Boolean
                    && *v == wire
                    && !wire.eq_ignore_ascii_case("true")
                    && !wire.eq_ignore_ascii_case("false")
            }
            ScoreError::MetadataNotObject(kind) => self.metadata.as_ref().is_some_and(|m| {
                let actual = match m {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Array(_) => "an array",
                    Value::Object(_) => "an object",
                };
                actual == *kind && !m.is_object()
            }),
            ScoreError::NulCharacter(field) => match *field {
                "name" => self.name.contains('\0'),
                "value" => wire.contains('\0'),
                "reason" => self.reason.as_ref().is_some_and(|r| r.contains('\0')),
                "metadata" => self.metadata.as_ref().is_some_and(json_has_nul),
                _ => false,
            },
            _ => false,
        }
    }
}

fn json_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(json_has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// The status the server answers `body` with, sent on a connection of its own.
fn raw_status(server: &TestServer, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(server.addr()).expect("connect to the oracle");
    write!(
        stream,
        "POST {SCORES_PATH} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\n\
         X-Project-Name: {PROJECT}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.api_key(),
        body.len(),
    )
    .expect("write the head");
    stream.write_all(body).expect("write the body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"))
}

/// Any text of `len` characters, over all of Unicode but NUL (which gets cases of its own, or
/// it would be in most long strings and hide every other rule).
fn unicode(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    let char = any::<char>().prop_map(|c| if c == '\0' { '\u{1}' } else { c });
    prop::collection::vec(char, len).prop_map(String::from_iter)
}

/// Text around the column width, in one- to four-byte characters.
fn near_column() -> impl Strategy<Value = String> {
    (
        COLUMN - 2..=COLUMN + 2,
        prop::sample::select(vec!['a', 'é', '€', '𝄞']),
    )
        .prop_map(|(n, c)| std::iter::repeat_n(c, n).collect())
}

fn trace_in() -> impl Strategy<Value = TraceIn> {
    prop_oneof![
        14 => (any::<u128>(), 0u8..=5).prop_map(|(n, form)| TraceIn::Id(Uuid::from_u128(n), form)),
        1 => unicode(0..40).prop_map(TraceIn::Text),
        1 => "[0-9a-fA-F-]{30,40}".prop_map(TraceIn::Text),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => unicode(0..300),
        2 => "\\PC{1,30}",
        1 => near_column(),
        1 => Just(String::new()),
        1 => Just("a\0b".to_owned()),
    ]
}

/// What Python's `float()` is picky about: spaces of every kind, `_`, digits of other scripts,
/// signs, exponents, `inf`/`nan`.
fn python_float_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "0", "1", "5", "9", ".", "e", "E", "-", "+", "_", "__", " ", "\t", "\n", "\x0b", "\x1c",
        "\u{85}", "\u{a0}", "\u{1680}", "\u{180e}", "\u{2007}", "\u{200b}", "\u{3000}", "\u{feff}",
        "٠", "٥", "０", "５", "𝟎", "𝟓", "½", "²", "inf", "nan", "infinity", "iNf",
    ]);
    prop::collection::vec(pieces, 1..7).prop_map(|p| p.concat())
}

fn value_text() -> impl Strategy<Value = String> {
    let special = [
        "0", "1", "0.5", "1.0", "-0", "+0.5", ".5", "5.", "1e-3", "1E0", "nan", "NaN", "inf",
        "-inf", "infinity", " 0.5", "0.5 ", "0.2_5", "0_.5", "٠.٥", "true", "TRUE", "True",
        "false", "FaLsE", " true", "true ", "yes", "no", "1.5", "-0.1", "", " ", "0x1", "１",
        "0,5", "PASS", "\0", "0.5\0",
    ];
    prop_oneof![
        3 => unicode(0..300),
        2 => prop::num::f64::ANY.prop_map(|f| f.to_string()),
        2 => (0.0f64..=1.0).prop_map(|f| f.to_string()),
        1 => (0.0f64..=1.0).prop_map(|f| format!("{f:e}")),
        3 => prop::sample::select(special.to_vec()).prop_map(str::to_owned),
        3 => python_float_text(),
        1 => near_column(),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => 0.0f64..=1.0,
        2 => prop::num::f64::ANY,
        1 => prop::sample::select(vec![
            0.0,
            -0.0,
            1.0,
            f64::EPSILON,
            f64::MIN_POSITIVE,
            1.0 + f64::EPSILON,
            -f64::EPSILON,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-20,
            1e-300,
            1e300,
        ]),
    ]
}

fn value_in() -> impl Strategy<Value = ValueIn> {
    prop_oneof![
        4 => (value_text(), any::<bool>())
            .prop_map(|(text, categorical)| ValueIn::Text { text, categorical }),
        2 => number().prop_map(ValueIn::Number),
        1 => any::<bool>().prop_map(ValueIn::Bool),
    ]
}

fn data_type() -> impl Strategy<Value = ScoreDataType> {
    prop::sample::select(vec![
        ScoreDataType::Numeric,
        ScoreDataType::Boolean,
        ScoreDataType::Categorical,
    ])
}

/// Any JSON value: every kind, nested a few levels, keys and strings over all of Unicode.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        unicode(0..20).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((unicode(0..10), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn metadata() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => prop::sample::select(vec![json!({"k": "\0"}), json!({"\0": 1}), json!({"a": [{"b": "x\0"}]})])
            .prop_map(Some),
        3 => prop::collection::vec((unicode(0..10), json_value()), 0..6)
            .prop_map(|pairs| Some(Value::Object(pairs.into_iter().collect()))),
        1 => json_value().prop_map(Some),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    (
        trace_in(),
        name(),
        value_in(),
        prop::option::of(data_type()),
        prop::option::of(prop_oneof![8 => unicode(0..300), 1 => Just("why\0".to_owned())]),
        metadata(),
    )
        .prop_map(|(trace, name, value, data_type, reason, metadata)| Input {
            trace,
            name,
            value,
            data_type,
            reason,
            metadata,
        })
}

/// A JSON value after the trip through text that a request body makes.
fn through_text(value: &Value) -> Value {
    serde_json::from_slice(&serde_json::to_vec(value).expect("serialize")).expect("parse")
}

/// The SDK, and a second server that is asked directly what it makes of a refused score.
struct Harness {
    server: TestServer,
    oracle: TestServer,
    client: Client,
}

/// Checks one score; returns its outcome: `accepted` or the error's variant.
fn check_score(h: &Harness, input: &Input) -> Result<&'static str, TestCaseError> {
    // What the server keeps is read back whole: keep it to this case.
    h.server.reset_records();
    let before = h.client.stats().scores;
    match h.client.score(input.score()) {
        Err(error) => {
            prop_assert!(
                input.reason_holds(&error),
                "refused with {:?}, which does not hold",
                error
            );
            let status = raw_status(&h.oracle, &input.raw_body());
            prop_assert!(
                status == 422 || status == 500,
                "refused with {:?} a score the server answers {}",
                error,
                status
            );
            prop_assert_eq!(
                h.client.stats().scores,
                before,
                "a refused score was counted"
            );
            Ok(match error {
                ScoreError::InvalidTraceId(_) => "InvalidTraceId",
                ScoreError::NameTooLong(_) => "NameTooLong",
                ScoreError::ValueTooLong(_) => "ValueTooLong",
                ScoreError::InvalidNumeric(_) => "InvalidNumeric",
                ScoreError::InvalidBoolean(_) => "InvalidBoolean",
                ScoreError::MetadataNotObject(_) => "MetadataNotObject",
                ScoreError::NulCharacter(_) => "NulCharacter",
                _ => "other",
            })
        }
        Ok(()) => {
            h.client
                .flush(WAIT)
                .map_err(|e| TestCaseError::fail(format!("flush: {e}")))?;
            let after = h.client.stats().scores;
            prop_assert_eq!(
                (after.sent, after.dropped.total(), after.pending),
                (before.sent + 1, 0, 0),
                "not delivered: {}; server answered {:?}",
                after,
                h.server.requests().last().map(|r| r.status)
            );
            let stored = h.server.scores();
            prop_assert_eq!(stored.len(), 1);
            prop_assert_eq!(h.server.status_count(201), 1);
            let stored = &stored[0].body;
            let trace_id = input.trace.uuid().expect("an accepted score has a UUID");
            prop_assert_eq!(
                &stored["trace_id"],
                &json!(trace_id.hyphenated().to_string())
            );
            prop_assert_eq!(&stored["name"], &json!(input.name));
            prop_assert_eq!(&stored["value"], &json!(input.wire_value()));
            prop_assert_eq!(&stored["data_type"], &json!(input.data_type().as_str()));
            prop_assert_eq!(&stored["source"], &json!("PROGRAMMATIC"));
            match &input.reason {
                Some(reason) => prop_assert_eq!(&stored["reason"], &json!(reason)),
                None => prop_assert!(stored.get("reason").is_none(), "reason sent: {}", stored),
            }
            match &input.metadata {
                Some(metadata) => prop_assert_eq!(&stored["metadata"], &through_text(metadata)),
                None => prop_assert!(
                    stored.get("metadata").is_none(),
                    "metadata sent: {}",
                    stored
                ),
            }
            Ok("accepted")
        }
    }
}

/// Any score: refused with a reason that holds and that the server agrees with (it answers
/// the same body 422 or 500), or accepted, answered 201 (never 422 or 500) and stored exactly
/// as given.
#[test]
fn any_score_is_refused_for_a_reason_that_holds_or_stored_as_given() {
    let server = lenient_server();
    let harness = Harness {
        client: client_for(&server)
            .flush_interval(Duration::from_millis(10))
            // One attempt each: a 422 or a 500 shows at once as a drop.
            .max_retries(0)
            .build()
            .expect("client"),
        oracle: lenient_server(),
        server,
    };
    let mut runner = TestRunner::new(Config {
        // `VALIDATION_CASES=20000` for a deeper run.
        cases: std::env::var("VALIDATION_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..Config::default()
    });
    let tally = std::sync::Mutex::new(std::collections::BTreeMap::<&str, u32>::new());
    let result = runner.run(&input(), |input| {
        let outcome = check_score(&harness, &input)?;
        *tally.lock().expect("tally").entry(outcome).or_default() += 1;
        Ok(())
    });
    let tally = tally.into_inner().expect("tally");
    eprintln!("[scores] outcomes: {tally:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        tally.get("accepted").copied().unwrap_or(0) >= 16 && tally.len() >= 5,
        "the strategy explores too little: {tally:?}"
    );
}
