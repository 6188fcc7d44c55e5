//! Injected faults: what each one sends on the wire, what it stores, and how the fault
//! queue and the responder pick them.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use pandaprobe_testing::{Fault, TestServer, DEFAULT_API_KEY, SCORES_PATH, TRACES_PATH};
use serde_json::json;

#[test]
fn status_faults_send_the_real_bodies_and_store_nothing() {
    let server = lenient();
    let client = client();
    runtime().block_on(async {
        for status in [401u16, 403, 404, 409, 422, 429, 502, 503, 504, 408, 418] {
            server.fail_next(1, Fault::Status(status));
            let reply = Call::new(SCORES_PATH, score_body().to_string())
                .send(&client, &server)
                .await
                .expect("request");
            assert_eq!(reply.status, status);
            assert!(reply.header("retry-after").is_none());
            match status {
                401 => assert_eq!(reply.json(), json!({"detail": "Invalid API key"})),
                403 | 404 | 409 | 418 => assert!(reply.json()["detail"].is_string()),
                422 => {
                    assert_eq!(reply.json()["detail"], "Validation error");
                    assert!(reply.json()["errors"][0]["field"].is_string());
                }
                429 => assert_eq!(
                    reply.json(),
                    json!({"error": "Rate limit exceeded: 200 per 1 minute"})
                ),
                _ => assert!(!reply.body.is_empty()),
            }
        }
        server.fail_next(1, Fault::Status(500));
        let reply = Call::new(SCORES_PATH, score_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 500);
        assert_eq!(reply.body, "Internal Server Error");
        assert_eq!(reply.header("connection"), None);
    });
    assert_eq!(server.score_count(), 0);
    let requests = server.requests();
    assert_eq!(requests[0].fault, Some(Fault::Status(401)));
    assert_eq!(requests[0].status, Some(401));
    assert_eq!(server.status_count(429), 1);
}

#[test]
fn retry_after_fault_sets_the_header() {
    let server = lenient();
    server.fail_next(
        1,
        Fault::RetryAfter {
            status: 429,
            retry_after: "2".into(),
        },
    );
    server.fail_next(
        1,
        Fault::RetryAfter {
            status: 503,
            retry_after: "Wed, 21 Oct 2015 07:28:00 GMT".into(),
        },
    );
    let first = one(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert_eq!(first.status, 429);
    assert_eq!(first.header("retry-after"), Some("2"));
    assert_eq!(
        first.json(),
        json!({"error": "Rate limit exceeded: 100 per 1 minute"})
    );
    let second = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(second.status, 503);
    assert_eq!(
        second.header("retry-after"),
        Some("Wed, 21 Oct 2015 07:28:00 GMT")
    );
    assert_eq!(server.trace_count() + server.score_count(), 0);
}

#[test]
fn fail_next_counts_down_and_queues_in_order() {
    let server = lenient();
    server.fail_next(2, Fault::Status(503));
    server.fail_next(1, Fault::Status(429));
    let calls: Vec<Call<'_>> = (0..4)
        .map(|_| Call::new(SCORES_PATH, score_body().to_string()))
        .collect();
    assert_eq!(statuses(&server, &calls), vec![503, 503, 429, 201]);
    assert_eq!(server.score_count(), 1);
}

#[test]
fn fail_next_on_only_hits_its_path() {
    let server = lenient();
    server.fail_next_on(TRACES_PATH, 1, Fault::Status(502));
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![201, 502, 202]);
}

#[test]
fn delay_fault_answers_late_and_stores() {
    let server = lenient();
    let delay = Duration::from_millis(200);
    server.fail_next(1, Fault::Delay(delay));
    let started = Instant::now();
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 201);
    assert!(started.elapsed() >= delay);
    assert_eq!(server.score_count(), 1);
    assert_eq!(server.requests()[0].fault, Some(Fault::Delay(delay)));
}

#[test]
fn delay_fault_stores_even_when_the_client_gave_up() {
    let server = lenient();
    server.fail_next(1, Fault::Delay(Duration::from_millis(600)));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let result = runtime()
        .block_on(Call::new(SCORES_PATH, score_body().to_string()).send(&impatient, &server));
    let error = result.expect_err("the client should time out");
    assert!(error.is_timeout(), "{error}");
    // The ambiguous failure: the server stores it anyway.
    assert!(server.wait_for_scores(1, WAIT));
    assert!(server.wait_for_status(201, 1, WAIT));
    assert_eq!(server.requests()[0].status, Some(201));
}

#[test]
fn reset_fault_closes_without_answer_and_stores_nothing() {
    let server = lenient();
    server.fail_next(1, Fault::Reset);
    let result = one_result(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert!(result.is_err(), "{result:?}");
    assert_eq!(server.score_count(), 0);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, None);
    assert_eq!(requests[0].fault, Some(Fault::Reset));
    // The server is fine afterwards.
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 201);
}

#[test]
fn store_then_reset_stores_but_never_answers() {
    let server = lenient();
    server.fail_next(2, Fault::StoreThenReset);
    let first = one_result(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert!(first.is_err(), "{first:?}");
    assert_eq!(server.score_count(), 1);
    let second = one_result(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert!(second.is_err(), "{second:?}");
    assert_eq!(server.trace_count(), 1);
    // An invalid request is only reset.
    server.fail_next(1, Fault::StoreThenReset);
    let invalid = one_result(&server, Call::new(SCORES_PATH, "[]"));
    assert!(invalid.is_err());
    assert_eq!(server.score_count(), 1);
    assert!(server.requests().iter().all(|r| r.status.is_none()));
}

#[test]
fn hang_fault_never_answers_until_the_client_gives_up() {
    let server = lenient();
    server.fail_next(1, Fault::Hang);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let result = runtime()
        .block_on(Call::new(SCORES_PATH, score_body().to_string()).send(&impatient, &server));
    assert!(result.expect_err("timeout").is_timeout());
    assert_eq!(server.score_count(), 0);
    assert_eq!(server.requests()[0].fault, Some(Fault::Hang));
    assert_eq!(server.requests()[0].status, None);
}

#[test]
fn hang_fault_ends_when_the_server_stops() {
    let server = lenient();
    server.fail_next(1, Fault::Hang);
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .write_all(raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY).as_bytes())
        .expect("write");
    assert!(server.wait_for_requests(1, WAIT));
    let started = Instant::now();
    server.stop();
    assert!(peer_closed(&mut stream));
    assert!(started.elapsed() < WAIT);
}

#[test]
fn raw_fault_sends_exactly_what_it_is_given() {
    let server = lenient();
    let huge = Bytes::from(vec![b'x'; 1 << 20]);
    server.fail_next(
        1,
        Fault::Raw {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/html".into()),
                ("x-odd".into(), "yes".into()),
                ("bad header".into(), "dropped".into()),
            ],
            body: huge.clone(),
        },
    );
    server.fail_next(
        1,
        Fault::Raw {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(b"{not json"),
        },
    );
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/html"));
    assert_eq!(reply.header("x-odd"), Some("yes"));
    assert_eq!(reply.body.len(), huge.len());
    let garbage = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(garbage.status, 201);
    assert_eq!(garbage.body, "{not json");
    assert_eq!(server.score_count(), 0);
}

#[test]
fn responder_decides_per_request_and_clear_faults_removes_it() {
    let server = lenient();
    server.set_responder(|info| {
        let body = info.json()?;
        if body["name"] == "flaky" && info.index % 2 == 0 {
            Some(Fault::Status(503))
        } else if info.header("x-chaos") == Some("reset") {
            Some(Fault::Reset)
        } else {
            None
        }
    });
    let flaky = score_with("name", json!("flaky"));
    let calls = [
        Call::new(SCORES_PATH, flaky.clone()),
        Call::new(SCORES_PATH, flaky.clone()),
        Call::new(SCORES_PATH, flaky.clone()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![503, 201, 503, 201]);
    let reset = one_result(
        &server,
        Call::new(SCORES_PATH, score_body().to_string()).header("X-Chaos", "reset"),
    );
    assert!(reset.is_err());
    // The fail_next queue comes before the responder.
    server.fail_next(1, Fault::Status(409));
    assert_eq!(
        statuses(&server, &[Call::new(SCORES_PATH, flaky.clone())]),
        vec![409]
    );
    server.fail_next(5, Fault::Status(409));
    server.clear_faults();
    let calls: Vec<Call<'_>> = (0..3)
        .map(|_| Call::new(SCORES_PATH, flaky.clone()))
        .collect();
    assert_eq!(statuses(&server, &calls), vec![201; 3]);
}

#[test]
fn quota_exceeded_fault_answers_like_the_real_quota() {
    let server = lenient();
    server.fail_next(1, Fault::QuotaExceeded);
    server.fail_next_on(TRACES_PATH, 1, Fault::QuotaExceeded);
    let score = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(score.status, 429);
    assert_eq!(
        score.json(),
        json!({"detail": "You've reached the traces limit (100) for your HOBBY plan. Please upgrade to continue."})
    );
    assert!(score.header("retry-after").is_none());
    let trace = one(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert_eq!(trace.status, 429);
    assert!(trace.json()["detail"]
        .as_str()
        .is_some_and(|d| d.contains("traces limit")));
    assert_eq!(server.trace_count() + server.score_count(), 0);
    assert_eq!(server.requests()[0].fault, Some(Fault::QuotaExceeded));

    // With a quota of its own, the fault names that quota.
    let server = TestServer::builder()
        .lenient()
        .trace_quota(7)
        .start()
        .expect("start");
    server.fail_next(1, Fault::QuotaExceeded);
    let reply = one(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert!(reply.json()["detail"]
        .as_str()
        .is_some_and(|d| d.contains("limit (7)")));
}

#[test]
fn raw_500_closes_the_connection_after_the_whole_body() {
    let server = lenient();
    let body = Bytes::from(vec![b'z'; 1 << 20]);
    server.fail_next(
        1,
        Fault::Raw {
            status: 500,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.clone(),
        },
    );
    let (mut stream, response) = raw_exchange(
        &server,
        &raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY),
    );
    assert!(response.starts_with("HTTP/1.1 500"), "{}", &response[..40]);
    assert!(response.ends_with(&"z".repeat(1000)));
    assert!(response.len() > body.len());
    assert!(!raw_headers(&response)
        .iter()
        .any(|h| h.starts_with("connection:")));
    assert!(clean_eof(&mut stream));
}
