//! Arbitrary server answers (any status from 100 to 599, garbage headers, `Retry-After` of
//! every shape, bodies of random bytes up to 1 MiB) never break the worker: each record gets
//! the outcome its status calls for (sent, retried then sent, or dropped with the right
//! reason, which flush reports), and the client keeps delivering afterwards.
//!
//! One server serves every case, each case a fresh client: parked, so that nothing is sent
//! before the flush asks for it (a flush only sees the drops that happen while it waits; see
//! `retries.rs`, `flush_reports_a_drop_that_came_before_it`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{client_for, lenient_server, parked, TRACE_ID, WAIT};
use pandaprobe::{Client, DropReason, FlushError, Score};
use pandaprobe_testing::{Fault, TestServer, SCORES_PATH};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};

/// How much of an answer the SDK reads (its `MAX_ANSWER_BYTES`): a JSON error body longer
/// than this is not understood as JSON.
const READ_AT_MOST: usize = 4096;

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

/// Any text of `len` characters, over all of Unicode.
fn unicode(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), len).prop_map(String::from_iter)
}

/// Any JSON value: every kind, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        unicode(0..20).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("detail".to_owned()),
                        Just("error".to_owned()),
                        unicode(0..10)
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
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
            2 => prop::sample::select(vec![
                100u16, 200, 201, 204, 301, 308, 401, 408, 422, 429, 500, 502, 503, 504,
            ]),
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

/// What the SDK must make of an answer.
#[derive(Debug, PartialEq)]
enum Expect {
    /// 2xx: counted as sent (a raw answer stores nothing).
    Sent,
    /// Retryable: retried, then delivered by the normal answer that follows.
    Retried,
    /// Dropped after one attempt, for this reason.
    Dropped(DropReason),
}

fn expect(answer: &Answer) -> Expect {
    // The test server sends a status below 200 as a 500.
    let status = if answer.status < 200 {
        500
    } else {
        answer.status
    };
    match status {
        200..=299 => Expect::Sent,
        // A 429 whose body is the server's domain error (`{"detail": "..."}`) is a used-up
        // quota; any other 429 is the rate limiter's.
        429 if is_domain_error(&answer.body.bytes()) => Expect::Dropped(DropReason::QuotaExceeded),
        408 | 429 | 500 | 502 | 503 | 504 => Expect::Retried,
        _ => Expect::Dropped(DropReason::Rejected),
    }
}

fn is_domain_error(body: &[u8]) -> bool {
    let head = &body[..body.len().min(READ_AT_MOST)];
    serde_json::from_slice::<Value>(head)
        .ok()
        .is_some_and(|v| v.get("detail").is_some_and(Value::is_string))
}

/// A client with retries and pauses short enough for one case each.
fn case_client(server: &TestServer) -> Client {
    parked(client_for(server))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(10))
        .max_retry_after(Duration::from_millis(50))
        .build()
        .expect("client")
}

fn check_answer(server: &TestServer, case: u64, answer: &Answer) -> Result<(), TestCaseError> {
    let expected = expect(answer);
    let client = case_client(server);
    server.reset_records();
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
    let flushed = client.flush(WAIT);
    let seen = || {
        let requests: Vec<_> = server
            .requests()
            .iter()
            .map(|r| {
                (
                    r.status,
                    r.fault.as_ref().map(|_| "fault"),
                    r.request_id().map(str::to_owned),
                )
            })
            .collect();
        format!("{}; requests {requests:?}", client.stats())
    };
    match &expected {
        Expect::Sent | Expect::Retried => prop_assert_eq!(flushed, Ok(()), "{}", seen()),
        Expect::Dropped(reason) => prop_assert_eq!(
            flushed,
            Err(FlushError::Dropped {
                dropped: 1,
                reason: *reason
            }),
            "{}",
            seen()
        ),
    }
    // The worker survived: a normal score afterwards is delivered.
    client
        .score(Score::numeric(TRACE_ID, "after", 0.5).metadata(json!({ "after": case })))
        .map_err(|e| TestCaseError::fail(format!("score after: {e}")))?;
    prop_assert_eq!(client.flush(WAIT), Ok(()), "the client stopped delivering");

    let s = client.stats().scores;
    prop_assert!(s.is_balanced(), "{}", s);
    prop_assert_eq!(s.pending, 0);
    prop_assert_eq!(s.accepted, 2);
    let stored: Vec<Value> = server
        .scores()
        .iter()
        .map(|r| r.body["metadata"].clone())
        .collect();
    prop_assert!(
        stored.contains(&json!({ "after": case })),
        "not delivered after: {}",
        s
    );
    let hostile_stored = stored.contains(&json!({ "case": case }));
    match expected {
        Expect::Sent => {
            prop_assert_eq!((s.sent, s.retried), (2, 0), "{}", s);
            prop_assert!(!hostile_stored, "a raw answer stores nothing");
        }
        Expect::Retried => {
            prop_assert_eq!(s.sent, 2, "{}", s);
            prop_assert!(s.retried > 0, "{}", s);
            prop_assert!(hostile_stored);
        }
        Expect::Dropped(reason) => {
            let by_reason = match reason {
                DropReason::QuotaExceeded => s.dropped.quota_exceeded,
                _ => s.dropped.rejected,
            };
            prop_assert_eq!((s.sent, s.retried), (1, 0), "{}", s);
            prop_assert_eq!((by_reason, s.dropped.total()), (1, 1), "{}", s);
            prop_assert!(!hostile_stored);
        }
    }
    Ok(())
}

#[test]
fn arbitrary_server_answers_never_break_the_worker() {
    let server = lenient_server();
    let mut runner = TestRunner::new(Config {
        // `ANSWERS_CASES=2000` for a deeper run.
        cases: std::env::var("ANSWERS_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(128),
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::cell::Cell::new(0);
    let result = runner.run(&answer(), |answer| {
        case.set(case.get() + 1);
        check_answer(&server, case.get(), &answer)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// One of each outcome, always, whatever the strategy draws.
#[test]
fn each_kind_of_answer_gets_its_outcome() {
    let server = lenient_server();
    let answers = [
        (204, vec![], Body::Bytes(vec![])),
        (
            299,
            vec![("connection", "close")],
            Body::Bytes(b"\xff\xfe".to_vec()),
        ),
        (101, vec![], Body::Bytes(vec![])),
        (
            503,
            vec![("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
            Body::Bytes(vec![]),
        ),
        (
            429,
            vec![("retry-after", "-5")],
            Body::Json(json!({"error": "slow down"})),
        ),
        (
            429,
            vec![],
            Body::Json(json!({"detail": "You've reached the traces limit"})),
        ),
        (
            308,
            vec![("location", "http://127.0.0.1:1/")],
            Body::Bytes(vec![]),
        ),
        (
            418,
            vec![("content-type", "text/html; charset=utf-16")],
            Body::Large {
                len: 1 << 20,
                seed: 7,
            },
        ),
        (
            599,
            vec![("content-encoding", "gzip")],
            Body::Bytes(b"not gzip".to_vec()),
        ),
    ];
    for (case, (status, headers, body)) in answers.into_iter().enumerate() {
        let answer = Answer {
            status,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            body,
        };
        check_answer(&server, 1_000 + case as u64, &answer)
            .unwrap_or_else(|e| panic!("{answer:?}: {e}"));
    }
}
