//! The ingestion contract for scores, and what both paths check first (routes, methods,
//! headers, JSON bodies), on a lenient server. Traces, rate limits and faults have their own
//! files.

mod common;

use common::*;
use pandaprobe_testing::{Fault, TestServer, DEFAULT_API_KEY, SCORES_PATH, TRACES_PATH};
use serde_json::{json, Value};

#[test]
fn good_score_is_answered_201_and_stored() {
    let server = lenient();
    let reply = one(
        &server,
        Call::new(SCORES_PATH, score_body().to_string()).header("X-Request-ID", "req-1"),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("x-request-id"), Some("req-1"));
    let answer = reply.json();
    assert_eq!(answer["trace_id"], TRACE_ID);
    assert_eq!(answer["name"], "accuracy");
    assert_eq!(answer["value"], "0.85");
    assert_eq!(answer["data_type"], "NUMERIC");
    assert_eq!(answer["source"], "PROGRAMMATIC");
    assert_eq!(answer["reason"], "close enough");
    assert_eq!(answer["metadata"], json!({"judge": "unit"}));
    assert!(answer["created_at"].as_str().is_some_and(|s| s.len() >= 20));

    let scores = server.scores();
    assert_eq!(scores.len(), 1);
    assert_eq!(server.score_count(), 1);
    assert_eq!(scores[0].body, score_body());
    assert_eq!(scores[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(answer["id"], scores[0].id.to_string());
    assert_eq!(server.status_count(201), 1);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, SCORES_PATH);
    assert_eq!(requests[0].status, Some(201));
    assert_eq!(requests[0].request_id(), Some("req-1"));
    assert_eq!(requests[0].header("X-API-KEY"), Some(DEFAULT_API_KEY));
    assert_eq!(requests[0].json(), Some(score_body()));
    assert!(requests[0].fault.is_none());
}

#[test]
fn score_defaults_and_accepted_values() {
    let server = lenient();
    // Minimal body: server defaults NUMERIC / ANNOTATION.
    let minimal = json!({"trace_id": TRACE_ID, "name": "n", "value": "1"}).to_string();
    let reply = one(&server, Call::new(SCORES_PATH, minimal));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["data_type"], "NUMERIC");
    assert_eq!(reply.json()["source"], "ANNOTATION");

    let ok = [
        score_with("value", json!("0")),
        score_with("value", json!("1.0")),
        score_with("value", json!("1e-3")),
        json!({"trace_id": TRACE_ID, "name": "b", "value": "TRUE", "data_type": "BOOLEAN"})
            .to_string(),
        json!({"trace_id": TRACE_ID, "name": "b", "value": "False", "data_type": "BOOLEAN"})
            .to_string(),
        json!({"trace_id": TRACE_ID, "name": "c", "value": "PASS", "data_type": "CATEGORICAL"})
            .to_string(),
        score_with("source", json!("ANNOTATION")),
        score_with("reason", Value::Null),
        score_with("name", json!("x".repeat(255))),
        json!({"trace_id": TRACE_ID, "name": "c", "value": "v".repeat(255), "data_type": "CATEGORICAL"})
            .to_string(),
        // What the real server stores as given.
        score_with("name", json!("")),
        score_with("value", json!(" 0.5\n")),
        score_with("value", json!("0.2_5")),
        score_with("value", json!("\u{0660}.\u{0665}")),
        score_with("value", json!("\u{FF10}.\u{FF15}")),
        score_with("value", json!("-0")),
        score_with("value", json!("1e-400")),
        json!({"trace_id": TRACE_ID, "name": "c", "value": "", "data_type": "CATEGORICAL"})
            .to_string(),
        score_with("reason", json!("r".repeat(1000))),
        // Unknown keys are ignored.
        score_with("session_id", json!("s-1")),
    ];
    let calls: Vec<Call<'_>> = ok
        .iter()
        .map(|b| Call::new(SCORES_PATH, b.clone()))
        .collect();
    assert_eq!(statuses(&server, &calls), vec![201; ok.len()]);
    assert_eq!(server.score_count(), ok.len() + 1);
}

#[test]
fn score_validation_errors_are_422() {
    let server = lenient();
    let bad = [
        ("trace_id", score_with("trace_id", json!("not-a-uuid"))),
        ("trace_id", score_with("trace_id", json!(42))),
        ("trace_id", score_without("trace_id")),
        ("name", score_without("name")),
        ("name", score_with("name", json!(7))),
        ("value", score_without("value")),
        ("value", score_with("value", json!(0.5))),
        ("data_type", score_with("data_type", json!("numeric"))),
        ("data_type", score_with("data_type", Value::Null)),
        ("value", score_with("value", json!("1.5"))),
        ("value", score_with("value", json!("-0.1"))),
        ("value", score_with("value", json!("nan"))),
        ("value", score_with("value", json!("inf"))),
        ("value", score_with("value", json!("abc"))),
        ("value", score_with("value", json!("1_"))),
        ("value", score_with("value", json!("\u{1c}0.5"))),
        ("value", score_with("value", json!("0.5\u{0}"))),
        ("value", score_with("value", json!("\u{00B2}"))),
        (
            "value",
            json!({"trace_id": TRACE_ID, "name": "b", "value": " true", "data_type": "BOOLEAN"})
                .to_string(),
        ),
        (
            "value",
            json!({"trace_id": TRACE_ID, "name": "b", "value": "yes", "data_type": "BOOLEAN"})
                .to_string(),
        ),
        ("source", score_with("source", json!("SDK"))),
        ("reason", score_with("reason", json!(1))),
        ("metadata", score_with("metadata", Value::Null)),
        ("metadata", score_with("metadata", json!([1, 2]))),
        ("metadata", score_with("metadata", json!("text"))),
    ];
    let client = client();
    runtime().block_on(async {
        for (field, body) in &bad {
            let reply = Call::new(SCORES_PATH, body.clone())
                .send(&client, &server)
                .await
                .expect("request");
            assert_eq!(reply.status, 422, "{field}: {body} -> {}", reply.body);
            let answer = reply.json();
            assert_eq!(answer["detail"], "Validation error");
            let errors = answer["errors"].as_array().expect("errors");
            assert!(
                errors.iter().any(|e| e["field"] == *field),
                "{field} not in {answer}"
            );
            assert!(errors.iter().all(|e| e["message"].is_string()));
        }
    });
    assert_eq!(server.score_count(), 0);
    assert_eq!(server.status_count(422), bad.len());
}

#[test]
fn score_database_errors_are_500() {
    let server = lenient();
    let long = "x".repeat(256);
    let categorical = |value: &str| {
        json!({"trace_id": TRACE_ID, "name": "c", "value": value, "data_type": "CATEGORICAL"})
            .to_string()
    };
    let cases = [
        score_with("name", json!(long)),
        score_with("name", json!("é".repeat(256))),
        categorical(&long),
        score_with("name", json!("a\u{0}b")),
        categorical("\u{0}"),
        score_with("reason", json!("why\u{0}")),
        score_with("metadata", json!({"deep": [{"x": "\u{0}"}]})),
        score_with("metadata", json!({"key\u{0}": 1})),
    ];
    for body in &cases {
        let reply = one(&server, Call::new(SCORES_PATH, body.clone()));
        assert_eq!(reply.status, 500, "{body}");
        assert_eq!(reply.body, "Internal Server Error");
        assert!(reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")));
        assert_eq!(reply.header("connection"), None);
    }
    // A NUL in an ignored key harms nothing; 255 characters fit.
    let fine = [
        score_with("session_id", json!("\u{0}")),
        score_with("name", json!("é".repeat(255))),
    ];
    for body in &fine {
        assert_eq!(
            one(&server, Call::new(SCORES_PATH, body.clone())).status,
            201
        );
    }
    assert_eq!(server.score_count(), fine.len());
    assert_eq!(server.status_count(500), cases.len());
}

#[test]
fn auth_is_checked_with_401() {
    let server = TestServer::builder()
        .lenient()
        .api_key("sk_pp_custom")
        .start()
        .expect("start");
    assert_eq!(server.api_key(), "sk_pp_custom");
    let body = score_body().to_string();
    let missing = one(
        &server,
        Call::new(SCORES_PATH, body.clone()).omit("X-API-Key"),
    );
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json(), json!({"detail": "Invalid API key"}));
    let wrong = one(
        &server,
        Call::new(TRACES_PATH, trace_body().to_string()).header("X-API-Key", DEFAULT_API_KEY),
    );
    assert_eq!(wrong.status, 401);
    let right = one(&server, Call::new(SCORES_PATH, body));
    assert_eq!(right.status, 201);
    assert_eq!(server.status_count(401), 2);
    assert_eq!(server.score_count(), 1);
}

#[test]
fn compressed_bodies_are_400_before_auth() {
    let server = lenient();
    let reply = one(
        &server,
        Call::new(SCORES_PATH, score_body().to_string())
            .header("Content-Encoding", "gzip")
            .header("X-API-Key", "wrong"),
    );
    assert_eq!(reply.status, 400);
    assert_eq!(server.score_count(), 0);
}

#[test]
fn project_name_rules_are_422() {
    let server = lenient();
    let body = score_body().to_string();
    let long = "p".repeat(256);
    let mut calls = vec![Call::new(SCORES_PATH, body.clone()).omit("X-Project-Name")];
    for bad in ["-project", "project-", "a/b", "semi;colon", long.as_str()] {
        calls.push(Call::new(SCORES_PATH, body.clone()).header("X-Project-Name", bad));
    }
    let bad_count = calls.len();
    for good in ["p", "My Project v1.2", "o'neil_x"] {
        calls.push(Call::new(SCORES_PATH, body.clone()).header("X-Project-Name", good));
    }
    let mut expected = vec![422; bad_count];
    expected.extend([201; 3]);
    assert_eq!(statuses(&server, &calls), expected);
    // The missing header is named in the error.
    let reply = one(&server, Call::new(TRACES_PATH, body).omit("X-Project-Name"));
    assert_eq!(reply.json()["errors"][0]["field"], "x-project-name");
}

#[test]
fn bodies_that_are_not_json_objects_are_422() {
    let server = lenient();
    let array = format!("[{}]", score_body());
    let calls = [
        Call::new(SCORES_PATH, array.clone()),
        Call::new(TRACES_PATH, format!("[{}]", trace_body())),
        Call::new(SCORES_PATH, "not json"),
        Call::new(SCORES_PATH, ""),
        Call::new(SCORES_PATH, "\"a string\""),
        Call::new(SCORES_PATH, score_body().to_string()).header("Content-Type", "text/plain"),
    ];
    assert_eq!(statuses(&server, &calls), vec![422; 6]);
    let reply = one(&server, Call::new(SCORES_PATH, array));
    assert_eq!(reply.json()["detail"], "Validation error");
    // Without a Content-Type the body is still parsed as JSON, like FastAPI.
    let untyped = one(
        &server,
        Call::new(SCORES_PATH, score_body().to_string()).omit("Content-Type"),
    );
    assert_eq!(untyped.status, 201);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = lenient();
    let client = client();
    runtime().block_on(async {
        let reply = Call::new("/scores", score_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json(), json!({"detail": "Not Found"}));
        let get = client
            .get(format!("{}{SCORES_PATH}", server.url()))
            .send()
            .await
            .expect("request");
        assert_eq!(get.status().as_u16(), 405);
    });
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].status, Some(405));
}

#[test]
fn request_id_is_echoed_on_every_answer() {
    let server = lenient();
    server.fail_next(1, Fault::Status(503));
    let client = client();
    runtime().block_on(async {
        for (call, status) in [
            (Call::new(SCORES_PATH, score_body().to_string()), 503),
            (Call::new(SCORES_PATH, "[]"), 422),
            (Call::new("/nope", "{}"), 404),
            (Call::new(TRACES_PATH, trace_body().to_string()), 202),
        ] {
            let reply = call
                .header("X-Request-ID", "abc-123")
                .send(&client, &server)
                .await
                .expect("request");
            assert_eq!(reply.status, status);
            assert_eq!(reply.header("x-request-id"), Some("abc-123"));
        }
        let without = Call::new(TRACES_PATH, trace_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(without.header("x-request-id"), None);
    });
}

#[test]
fn the_value_is_checked_only_when_every_other_field_is_valid() {
    let server = lenient();
    // pydantic runs the value check as an `after` model validator.
    let reply = one(
        &server,
        Call::new(SCORES_PATH, score_with("source", json!("SDK"))).header("X-Unused", "1"),
    );
    assert_eq!(reply.status, 422);
    let mut body = score_body();
    body["source"] = json!("SDK");
    body["value"] = json!("9");
    let reply = one(&server, Call::new(SCORES_PATH, body.to_string()));
    let fields: Vec<Value> = reply.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, vec![json!("source")]);
    // Alone, the value's error carries the backend's message.
    let reply = one(
        &server,
        Call::new(SCORES_PATH, score_with("value", json!("9"))),
    );
    assert_eq!(
        reply.json()["errors"][0]["message"],
        "Value error, NUMERIC score must be in [0.0, 1.0]"
    );
}
