//! Score values checked against CPython: every case in `data/python_float_cases.rs` was run
//! through Python's `float()` (NUMERIC, then the [0, 1] range) and `str.lower()` (BOOLEAN);
//! the server must accept exactly the values Python accepts.

mod common;

#[path = "data/python_float_cases.rs"]
mod cases;

use common::*;
use pandaprobe_testing::SCORES_PATH;
use serde_json::json;

/// Every value whose status disagrees with CPython, as `value -> status`.
fn disagreements(data_type: &str, cases: &[(&str, bool)]) -> Vec<String> {
    let server = lenient();
    let client = client();
    runtime().block_on(async {
        let mut wrong = Vec::new();
        for (value, accepted) in cases {
            let body = json!({
                "trace_id": TRACE_ID,
                "name": "n",
                "value": value,
                "data_type": data_type,
            });
            let reply = Call::new(SCORES_PATH, body.to_string())
                .send(&client, &server)
                .await
                .expect("request");
            let expected = if *accepted { 201 } else { 422 };
            if reply.status != expected {
                wrong.push(format!(
                    "{value:?} -> {} (CPython: {expected})",
                    reply.status
                ));
            }
        }
        wrong
    })
}

#[test]
fn numeric_values_are_accepted_exactly_when_python_float_accepts_them() {
    assert!(cases::NUMERIC.len() > 300);
    let wrong = disagreements("NUMERIC", cases::NUMERIC);
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn boolean_values_are_accepted_exactly_when_python_lower_matches() {
    let wrong = disagreements("BOOLEAN", cases::BOOLEAN);
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
