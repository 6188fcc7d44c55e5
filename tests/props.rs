//! Property tests of issue 4 ("hostile input and answers"):
//!
//! * any [`Score`] that `score()` accepts serializes to a body the server's contract allows: the
//!   test server, which enforces the contract, answers it 201 (never 422 or 500) and stores
//!   exactly the fields given; any score `score()` refuses is refused for a reason that holds;
//! * arbitrary server answers (any status, garbage headers, bodies of random bytes up to 1 MiB)
//!   never panic the worker, every record is accounted for, and memory stays bounded.
//!
//! One client and one server serve all the cases of a property.
#![cfg(feature = "testing")]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use pandaprobe::testing::{Fault, TestServer, SCORES_PATH};
use pandaprobe::{Client, Score, ScoreDataType, ScoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
/// The server's column width for names and values (longer gives a 500).
const COLUMN: usize = 255;
const FLUSH: Duration = Duration::from_secs(10);

/// Runs the tests of this file one at a time: the memory figures of one must not include the
/// allocations of another running beside it.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Harness {
    server: TestServer,
    client: Client,
}

/// A client and a server for all the cases of one property; `record_requests` is off where the
/// answers are large, so that the server's own bookkeeping does not blur the memory figures.
fn harness(cell: &'static OnceLock<Harness>, record_requests: bool) -> &'static Harness {
    cell.get_or_init(|| {
        let server = TestServer::builder()
            .record_requests(record_requests)
            .start()
            .expect("start the test server");
        let client = Client::builder()
            .api_key(server.api_key())
            .project_name("props")
            .endpoint(server.url())
            .flush_interval(Duration::from_millis(10))
            .request_timeout(Duration::from_secs(5))
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(10))
            .max_retry_after(Duration::from_millis(50))
            .build()
            .expect("client");
        Harness { server, client }
    })
}

// ---------------------------------------------------------------------------------------------
// Arbitrary scores
// ---------------------------------------------------------------------------------------------

/// How the trace id is handed to the score.
#[derive(Debug, Clone)]
enum TraceIn {
    /// A UUID, in one of its text forms (0-4) or as a `Uuid` (5).
    Id(Uuid, u8),
    /// Any text.
    Text(String),
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
        let name = self.name.clone();
        let mut score = match (&self.trace, &self.value) {
            (TraceIn::Id(id, 5), value) => make(*id, name, value),
            (trace, value) => make(trace.text(), name, value),
        };
        if let Some(data_type) = self.data_type {
            score = score.data_type(data_type);
        }
        if let Some(reason) = &self.reason {
            score = score.reason(reason.clone());
        }
        if let Some(metadata) = &self.metadata {
            score = score.metadata(metadata.clone());
        }
        score
    }

    fn effective_type(&self) -> ScoreDataType {
        self.data_type.unwrap_or(match &self.value {
            ValueIn::Text {
                categorical: true, ..
            } => ScoreDataType::Categorical,
            ValueIn::Text { .. } | ValueIn::Number(_) => ScoreDataType::Numeric,
            ValueIn::Bool(_) => ScoreDataType::Boolean,
        })
    }

    /// The value as the contract wants it sent: always a string, booleans in lower case.
    fn wire_value(&self) -> String {
        match &self.value {
            ValueIn::Text { text, .. } if self.effective_type() == ScoreDataType::Boolean => {
                text.to_ascii_lowercase()
            }
            ValueIn::Text { text, .. } => text.clone(),
            // The SDK's rule: plain decimal, or exponent form where that would be long.
            ValueIn::Number(n) if n.to_string().len() > 24 => format!("{n:e}"),
            ValueIn::Number(n) => n.to_string(),
            ValueIn::Bool(b) => b.to_string(),
        }
    }

    /// Whether any text the score carries holds a NUL character.
    fn has_nul(&self) -> bool {
        fn in_json(v: &Value) -> bool {
            match v {
                Value::String(s) => s.contains('\0'),
                Value::Array(a) => a.iter().any(in_json),
                Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || in_json(v)),
                _ => false,
            }
        }
        self.name.contains('\0')
            || self.wire_value().contains('\0')
            || self.reason.as_ref().is_some_and(|r| r.contains('\0'))
            || self.metadata.as_ref().is_some_and(in_json)
    }

    fn trace_id(&self) -> Option<Uuid> {
        match &self.trace {
            TraceIn::Id(id, _) => Some(*id),
            TraceIn::Text(text) => Uuid::try_parse(text).ok(),
        }
    }

    /// The server's rules (pandaprobe-api.md), written independently of the SDK's validation.
    fn server_accepts(&self) -> bool {
        let value = self.wire_value();
        let value_ok = match self.effective_type() {
            ScoreDataType::Numeric => value
                .trim()
                .parse::<f64>()
                .is_ok_and(|v| (0.0..=1.0).contains(&v)),
            ScoreDataType::Boolean => {
                let v = value.trim();
                v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")
            }
            _ => true,
        };
        self.trace_id().is_some()
            && (1..=COLUMN).contains(&self.name.chars().count())
            && value.chars().count() <= COLUMN
            && value_ok
            && self.metadata.as_ref().is_none_or(Value::is_object)
    }

    /// Checks that `error` states a reason that holds for this input.
    fn check_reason(&self, error: &ScoreError) -> Result<(), String> {
        let holds = match error {
            ScoreError::InvalidTraceId(text) => {
                matches!(&self.trace, TraceIn::Text(t) if t == text && Uuid::try_parse(t).is_err())
            }
            ScoreError::EmptyName => self.name.is_empty(),
            ScoreError::NameTooLong(n) => *n == self.name.chars().count() && *n > COLUMN,
            ScoreError::ValueTooLong(n) => {
                let text = match &self.value {
                    ValueIn::Text { text, .. } => text.clone(),
                    ValueIn::Number(n) => n.to_string(),
                    ValueIn::Bool(b) => b.to_string(),
                };
                *n == text.chars().count() && *n > COLUMN
            }
            ScoreError::InvalidNumeric(_) => {
                self.effective_type() == ScoreDataType::Numeric
                    && match &self.value {
                        ValueIn::Number(n) => !(0.0..=1.0).contains(n),
                        ValueIn::Bool(_) => true,
                        ValueIn::Text { text, .. } => {
                            !text.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v))
                        }
                    }
            }
            ScoreError::InvalidBoolean(_) => {
                let v = self.wire_value();
                self.effective_type() == ScoreDataType::Boolean && v != "true" && v != "false"
            }
            ScoreError::EmptyCategorical => {
                self.effective_type() == ScoreDataType::Categorical && self.wire_value().is_empty()
            }
            ScoreError::MetadataNotObject(_) => {
                self.metadata.as_ref().is_some_and(|m| !m.is_object())
            }
            ScoreError::NulCharacter(_) => self.has_nul(),
            other => return Err(format!("score() failed with {other:?} on a healthy client")),
        };
        if holds {
            Ok(())
        } else {
            Err(format!("refused with {error:?}, which does not hold"))
        }
    }

    /// A refusal of something the server would take: only where the SDK is knowingly stricter
    /// (an empty CATEGORICAL label; a NUMERIC or BOOLEAN value with spaces around it, which the
    /// server trims; a NUL character, which the test server stores but the real server's
    /// database refuses).
    fn knowingly_stricter(&self, error: &ScoreError) -> bool {
        let value = self.wire_value();
        match error {
            ScoreError::EmptyCategorical | ScoreError::NulCharacter(_) => true,
            ScoreError::InvalidNumeric(_) | ScoreError::InvalidBoolean(_) => value.trim() != value,
            _ => false,
        }
    }
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
}

fn make(trace: impl pandaprobe::IntoTraceId, name: String, value: &ValueIn) -> Score {
    match value {
        ValueIn::Text {
            text,
            categorical: false,
        } => Score::new(trace, name, text.clone()),
        ValueIn::Text {
            text,
            categorical: true,
        } => Score::categorical(trace, name, text.clone()),
        ValueIn::Number(n) => Score::numeric(trace, name, *n),
        ValueIn::Bool(b) => Score::boolean(trace, name, *b),
    }
}

/// Any text of `len` characters, over all of Unicode.
fn unicode(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), len).prop_map(String::from_iter)
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
        8 => (any::<u128>(), 0u8..=5).prop_map(|(n, form)| TraceIn::Id(Uuid::from_u128(n), form)),
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
    ]
}

fn value_text() -> impl Strategy<Value = String> {
    let special = [
        "0", "1", "0.5", "1.0", "-0", "+0.5", ".5", "5.", "1e-3", "1E0", "nan", "NaN", "inf",
        "-inf", "infinity", " 0.5", "0.5 ", "true", "TRUE", "True", "false", "FaLsE", " true",
        "yes", "no", "1.5", "-0.1", "", " ", "0x1", "１", "0,5", "PASS",
    ];
    prop_oneof![
        3 => unicode(0..300),
        2 => prop::num::f64::ANY.prop_map(|f| f.to_string()),
        2 => (0.0f64..=1.0).prop_map(|f| f.to_string()),
        1 => (0.0f64..=1.0).prop_map(|f| format!("{f:e}")),
        3 => prop::sample::select(special.to_vec()).prop_map(str::to_owned),
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
        prop::option::of(unicode(0..300)),
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

/// Checks one score; returns its outcome: `accepted` or the error's variant.
fn check_score(input: &Input) -> Result<String, TestCaseError> {
    static CELL: OnceLock<Harness> = OnceLock::new();
    let Harness { server, client } = harness(&CELL, true);
    let before = client.stats().scores;
    let stored_before = server.score_count();
    match client.score(input.score()) {
        Err(error) => {
            prop_assert!(
                input.check_reason(&error).is_ok(),
                "{}",
                input.check_reason(&error).unwrap_err()
            );
            prop_assert!(
                !input.server_accepts() || input.knowingly_stricter(&error),
                "refused with {error:?} a score the server accepts"
            );
            let after = client.stats().scores;
            prop_assert_eq!(
                after.accepted,
                before.accepted,
                "a refused score was counted"
            );
            let variant = format!("{error:?}");
            Ok(variant.split('(').next().unwrap_or_default().to_owned())
        }
        Ok(()) => {
            prop_assert!(
                input.server_accepts(),
                "accepted a score the server refuses"
            );
            client
                .flush(FLUSH)
                .map_err(|e| TestCaseError::fail(format!("flush: {e}")))?;
            let after = client.stats().scores;
            prop_assert!(after.is_balanced());
            prop_assert_eq!(after.pending, 0);
            prop_assert_eq!(after.sent, before.sent + 1, "not delivered: {:?}", after);
            prop_assert_eq!(server.status_count(422), 0);
            prop_assert_eq!(server.status_count(500), 0);
            prop_assert_eq!(server.score_count(), stored_before + 1);
            let stored = server.scores().pop().expect("the stored score").body;
            let trace_id = input.trace_id().expect("an accepted score has a UUID");
            prop_assert_eq!(
                &stored["trace_id"],
                &json!(trace_id.hyphenated().to_string())
            );
            prop_assert_eq!(&stored["name"], &json!(input.name));
            prop_assert_eq!(&stored["value"], &json!(input.wire_value()));
            prop_assert_eq!(
                &stored["data_type"],
                &json!(input.effective_type().as_str())
            );
            prop_assert_eq!(&stored["source"], &json!("PROGRAMMATIC"));
            match &input.reason {
                Some(reason) => prop_assert_eq!(&stored["reason"], &json!(reason)),
                None => prop_assert!(stored.get("reason").is_none(), "reason sent: {stored}"),
            }
            match &input.metadata {
                Some(metadata) => prop_assert_eq!(&stored["metadata"], &through_text(metadata)),
                None => prop_assert!(stored.get("metadata").is_none(), "metadata sent: {stored}"),
            }
            Ok("accepted".to_owned())
        }
    }
}

/// Accepted scores are answered 201 and stored as given; refused ones say why.
#[test]
fn any_accepted_score_is_stored_as_given() {
    let _serial = serial();
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let tally = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    let result = runner.run(&input(), |input| {
        let outcome = check_score(&input)?;
        *tally.lock().expect("tally").entry(outcome).or_default() += 1;
        Ok(())
    });
    eprintln!(
        "[scores] outcomes over the cases: {:?}",
        tally.lock().expect("tally")
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The values the property test found that are not covered by a broader strategy.
#[test]
fn boundary_scores() {
    let _serial = serial();
    let cases = [
        Input {
            trace: TraceIn::Id(Uuid::nil(), 4),
            name: "é".repeat(COLUMN),
            value: ValueIn::Number(-0.0),
            data_type: None,
            reason: Some(String::new()),
            metadata: Some(json!({})),
        },
        Input {
            trace: TraceIn::Id(Uuid::max(), 1),
            name: "\u{0}".into(),
            value: ValueIn::Text {
                text: "TrUe".into(),
                categorical: false,
            },
            data_type: Some(ScoreDataType::Boolean),
            reason: None,
            metadata: Some(json!({"a": [1, null, {"b": 1.5e300}], "": "\u{10FFFF}"})),
        },
        Input {
            trace: TraceIn::Text(TRACE_ID.into()),
            name: "n".into(),
            value: ValueIn::Number(1e-20),
            data_type: Some(ScoreDataType::Categorical),
            reason: None,
            metadata: None,
        },
    ];
    for input in cases {
        check_score(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
    }
}

/// A tiny NUMERIC number must not be sent as its 302-character plain decimal form (the server
/// stores 255 characters and answers 500): it goes out in exponent form.
#[test]
fn numeric_value_with_a_long_decimal_form_is_refused_or_sent_short() {
    let input = Input {
        trace: TraceIn::Text(TRACE_ID.into()),
        name: "tiny".into(),
        value: ValueIn::Number(1e-300),
        data_type: None,
        reason: None,
        metadata: None,
    };
    let server = TestServer::start().expect("start the test server");
    let client = Client::builder()
        .api_key(server.api_key())
        .project_name("props")
        .endpoint(server.url())
        .max_retries(0)
        .build()
        .expect("client");
    match client.score(input.score()) {
        Err(e) => assert!(matches!(
            e,
            ScoreError::InvalidNumeric(_) | ScoreError::ValueTooLong(_)
        )),
        Ok(()) => {
            client.flush(FLUSH).expect("flush");
            let s = client.stats().scores;
            assert_eq!(
                (s.sent, server.status_count(500)),
                (1, 0),
                "accepted, then refused by the server: {s:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary server answers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    /// `len` random bytes from `seed`: up to 1 MiB without a 1 MiB case to shrink.
    Large {
        len: usize,
        seed: u64,
    },
    Json(Value),
}

impl Body {
    fn bytes(&self) -> Bytes {
        match self {
            Body::Bytes(b) => Bytes::from(b.clone()),
            Body::Large { len, seed } => {
                let mut buf = vec![0u8; *len];
                StdRng::seed_from_u64(*seed).fill_bytes(&mut buf);
                Bytes::from(buf)
            }
            Body::Json(v) => Bytes::from(serde_json::to_vec(v).expect("serialize")),
        }
    }
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

fn retry_after_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,25}",
        "-[0-9]{1,5}",
        "[0-9]{1,3}\\.[0-9]{1,3}",
        " [0-9] ",
        "\\PC{0,40}",
        any::<u32>().prop_map(|secs| httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + Duration::from_secs(u64::from(secs) * 4)
        )),
        Just("Sun, 06 Nov 1994 08:49:37 GMT".to_owned()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        Just("Sunday, 06-Nov-94 08:49:37 GMT".to_owned()),
        Just("Sun Nov  6 08:49:37 1994".to_owned()),
    ]
}

fn header() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        3 => retry_after_value().prop_map(|v| ("retry-after".to_owned(), v)),
        1 => prop::sample::select(vec![
            "application/json",
            "text/plain",
            "text/html; charset=utf-16",
            "application/octet-stream",
            "",
        ])
        .prop_map(|v| ("content-type".to_owned(), v.to_owned())),
        1 => prop::sample::select(vec!["gzip", "br", "identity", "x-garbage"])
            .prop_map(|v| ("content-encoding".to_owned(), v.to_owned())),
        1 => prop::sample::select(vec!["close", "keep-alive", "upgrade"])
            .prop_map(|v| ("connection".to_owned(), v.to_owned())),
        2 => ("x-[a-z0-9-]{1,20}", "\\PC{0,200}"),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Body::Bytes),
        1 => (0usize..=1 << 20, any::<u64>()).prop_map(|(len, seed)| Body::Large { len, seed }),
        2 => unicode(0..5000).prop_map(|s| Body::Json(json!({ "detail": s }))),
        1 => json_value().prop_map(Body::Json),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop_oneof![
            3 => 100u16..600,
            1 => prop::sample::select(vec![200u16, 201, 204, 301, 308, 408, 429, 500, 502, 503, 504]),
        ],
        prop::collection::vec(header(), 0..6),
        body(),
    )
        .prop_map(|(status, headers, body)| Answer {
            status,
            headers,
            body,
        })
}

/// What the SDK must make of an answer with this status (as the test server sends it: a
/// status below 200 goes out as 500).
#[derive(Debug, PartialEq)]
enum Expect {
    /// 2xx: counted as sent (a raw answer stores nothing).
    Sent,
    /// Retryable: retried once, then delivered by the normal answer that follows.
    Retried,
    /// Anything else: dropped as rejected after one attempt.
    Rejected,
}

fn expect(status: u16) -> Expect {
    let status = if status < 200 { 500 } else { status };
    match status {
        200..=299 => Expect::Sent,
        408 | 429 | 500 | 502 | 503 | 504 => Expect::Retried,
        _ => Expect::Rejected,
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn check_answer(case: u64, answer: &Answer) -> Result<(), TestCaseError> {
    static CELL: OnceLock<Harness> = OnceLock::new();
    let Harness { server, client } = harness(&CELL, false);
    let before = client.stats();
    let stored_before = server.score_count();
    server.fail_next_on(
        SCORES_PATH,
        1,
        Fault::Raw {
            status: answer.status,
            headers: answer.headers.clone(),
            body: answer.body.bytes(),
        },
    );
    client
        .score(Score::numeric(TRACE_ID, "hostile", 0.5).metadata(json!({ "case": case })))
        .map_err(|e| TestCaseError::fail(format!("score: {e}")))?;
    client
        .flush(FLUSH)
        .map_err(|e| TestCaseError::fail(format!("flush after the hostile answer: {e}")))?;
    // The worker survived: a normal score afterwards is delivered.
    client
        .score(Score::numeric(TRACE_ID, "after", 0.5).metadata(json!({ "after": case })))
        .map_err(|e| TestCaseError::fail(format!("score after: {e}")))?;
    client
        .flush(FLUSH)
        .map_err(|e| TestCaseError::fail(format!("flush after: {e}")))?;
    let after = client.stats();
    let (s, b) = (after.scores, before.scores);
    prop_assert!(s.is_balanced(), "{:?}", s);
    prop_assert_eq!(s.pending, 0);
    prop_assert_eq!(s.accepted, b.accepted + 2);
    let stored: Vec<Value> = server.scores()[stored_before..]
        .iter()
        .map(|r| r.body["metadata"].clone())
        .collect();
    prop_assert!(
        stored.contains(&json!({ "after": case })),
        "the score after the hostile answer was not delivered: {:?}",
        s
    );
    let hostile_stored = stored.contains(&json!({ "case": case }));
    match expect(answer.status) {
        Expect::Sent => {
            prop_assert_eq!(s.sent, b.sent + 2, "{:?}", s);
            prop_assert!(!hostile_stored);
        }
        Expect::Retried => {
            prop_assert_eq!(s.sent, b.sent + 2, "{:?}", s);
            prop_assert!(s.retried > b.retried, "{:?}", s);
            prop_assert!(hostile_stored);
        }
        Expect::Rejected => {
            prop_assert_eq!(s.sent, b.sent + 1, "{:?}", s);
            prop_assert_eq!(s.dropped.rejected, b.dropped.rejected + 1, "{:?}", s);
            prop_assert!(!hostile_stored);
        }
    }
    Ok(())
}

/// Arbitrary answers never panic the worker, every record is accounted for, and the memory
/// of the process stays bounded (the SDK reads at most a few KiB of any answer).
#[test]
fn arbitrary_server_answers_never_break_the_worker() {
    const CASES: u32 = 96;
    // Alone, so that the memory figures are this test's own.
    let _serial = serial();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let rss_before = rss_kib();
    let cases = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&answer(), |answer| {
        let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        check_answer(case, &answer)
    });
    let case = cases.into_inner();
    let rss_after = rss_kib();
    eprintln!(
        "[hostile answers] {case} answers (with shrinking); VmRSS before {rss_before} KiB, after \
         {rss_after} KiB, growth {} KiB",
        rss_after as i64 - rss_before as i64
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "RSS grew by {} KiB over {case} answers",
        rss_after - rss_before
    );
}
