//! The rate limiter: fixed windows per API key and path, counted before anything else,
//! refused with the real server's 429 (no `Retry-After`), hosted limits by default.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pandaprobe_testing::{
    spans_path, trace_path, Fault, TestServer, DEFAULT_PATH_REQUESTS_PER_MINUTE,
    HOSTED_SCORES_PER_MINUTE, HOSTED_TRACES_PER_MINUTE, SCORES_PATH, SPANS_PATH_TEMPLATE,
    TRACES_PATH, TRACE_PATH_TEMPLATE,
};
use serde_json::json;
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);

/// A server whose only rate limit is `limit` per `window` on the scores path.
fn limited(limit: u32, window: Duration) -> TestServer {
    TestServer::builder()
        .lenient()
        .rate_limit(SCORES_PATH, limit, window)
        .start()
        .expect("start")
}

#[test]
fn the_defaults_are_the_hosted_limits() {
    assert_eq!(
        (HOSTED_SCORES_PER_MINUTE, HOSTED_TRACES_PER_MINUTE),
        (200, 100)
    );
    let server = TestServer::start().expect("start");
    // Invalid bodies count too, and keep this fast (no 500s, no stored records).
    let scores: Vec<Call<'_>> = (0..200).map(|_| Call::new(SCORES_PATH, "[]")).collect();
    assert_eq!(statuses(&server, &scores), vec![422; 200]);
    let refused = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json(),
        json!({"error": "Rate limit exceeded: 200 per 1 minute"})
    );

    let traces: Vec<Call<'_>> = (0..100)
        .map(|_| Call::new(TRACES_PATH, trace_body().to_string()))
        .collect();
    assert_eq!(statuses(&server, &traces), vec![202; 100]);
    let refused = one(&server, Call::new(TRACES_PATH, trace_body().to_string()));
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json(),
        json!({"error": "Rate limit exceeded: 100 per 1 minute"})
    );
    assert_eq!(server.status_count(429), 2);
}

#[test]
fn a_refusal_has_no_retry_after_and_no_rate_limit_headers() {
    let server = limited(1, MINUTE);
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![201, 429]);
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("retry-after").is_none());
    assert!(
        !reply
            .headers
            .keys()
            .any(|k| k.as_str().contains("ratelimit")),
        "{:?}",
        reply.headers
    );
    assert_eq!(server.score_count(), 1);
}

#[test]
fn a_window_opens_at_its_first_request_and_refusals_do_not_extend_it() {
    let window = Duration::from_millis(300);
    let server = limited(3, window);
    let client = client();
    runtime().block_on(async {
        let call = Call::new(SCORES_PATH, score_body().to_string());
        let opened = Instant::now();
        for expected in [201, 201, 201, 429, 429] {
            let reply = call.send(&client, &server).await.expect("request");
            assert_eq!(reply.status, expected);
        }
        // Keep asking: if refusals extended the window, this would never pass.
        let deadline = Instant::now() + WAIT;
        let reopened = loop {
            let asked = Instant::now();
            let reply = call.send(&client, &server).await.expect("request");
            if reply.status == 201 {
                break asked;
            }
            assert_eq!(reply.status, 429);
            assert!(Instant::now() < deadline, "the window never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(reopened >= opened + window);
        // The new window opened at that request: two more fit.
        for expected in [201, 201, 429] {
            let reply = call.send(&client, &server).await.expect("request");
            assert_eq!(reply.status, expected);
        }
    });
    assert_eq!(server.score_count(), 6);
    assert_eq!(
        one(&server, Call::new(SCORES_PATH, score_body().to_string())).json()["error"],
        "Rate limit exceeded: 3 per 300 millisecond"
    );
}

#[test]
fn every_request_counts_before_auth_and_validation_whatever_its_method() {
    let server = limited(4, MINUTE);
    let client = client();
    runtime().block_on(async {
        let get = client
            .get(format!("{}{SCORES_PATH}", server.url()))
            .header("X-API-Key", server.api_key())
            .send()
            .await
            .expect("request");
        assert_eq!(get.status().as_u16(), 405);
    });
    let calls = [
        Call::new(SCORES_PATH, "[]"),
        Call::new(SCORES_PATH, score_body().to_string()).omit("X-Project-Name"),
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![422, 422, 201, 429]);
}

#[test]
fn on_the_traces_path_only_valid_authorised_requests_count() {
    // There the limit is a decorator on the handler, after auth and validation.
    let server = TestServer::builder()
        .lenient()
        .rate_limit(TRACES_PATH, 2, MINUTE)
        .start()
        .expect("start");
    let calls = [
        Call::new(TRACES_PATH, "[]"),
        Call::new(TRACES_PATH, trace_body().to_string()).header("X-API-Key", "sk_pp_wrong"),
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![422, 401, 202, 202, 429]);
}

#[test]
fn each_api_key_has_its_own_window_and_requests_without_one_share_one() {
    let server = limited(2, MINUTE);
    let body = score_body().to_string();
    let with_key = |key| Call::new(SCORES_PATH, body.clone()).header("X-API-Key", key);
    let own = server.api_key().to_owned();
    let calls = [
        with_key(&own),
        with_key(&own),
        with_key(&own),
        // Another key: its own budget, even though it is refused with 401.
        with_key("sk_pp_other"),
        with_key("sk_pp_other"),
        with_key("sk_pp_other"),
        // No key, or an empty one: one shared anonymous budget.
        Call::new(SCORES_PATH, body.clone()).omit("X-API-Key"),
        with_key(""),
        Call::new(SCORES_PATH, body.clone()).omit("X-API-Key"),
    ];
    assert_eq!(
        statuses(&server, &calls),
        vec![201, 201, 429, 401, 401, 429, 401, 401, 429]
    );
}

#[test]
fn paths_have_their_own_limits_and_other_paths_none() {
    let server = TestServer::builder()
        .lenient()
        .rate_limit(SCORES_PATH, 1, MINUTE)
        .rate_limit(TRACES_PATH, 5, MINUTE)
        .rate_limit(TRACES_PATH, 2, MINUTE) // replaces the 5
        .start()
        .expect("start");
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new("/elsewhere", "{}"),
        Call::new("/elsewhere", "{}"),
    ];
    assert_eq!(
        statuses(&server, &calls),
        vec![201, 202, 202, 429, 429, 404, 404]
    );
}

#[test]
fn clients_sharing_a_key_share_the_window() {
    let server = limited(4, MINUTE);
    let (first, second) = (client(), client());
    let call = Call::new(SCORES_PATH, score_body().to_string());
    let mut got = Vec::new();
    runtime().block_on(async {
        for _ in 0..3 {
            got.push(call.send(&first, &server).await.expect("request").status);
            got.push(call.send(&second, &server).await.expect("request").status);
        }
    });
    assert_eq!(got, vec![201, 201, 201, 201, 429, 429]);
    assert_eq!(server.status_count(429), 2);
}

#[test]
fn faults_that_replace_the_answer_do_not_count() {
    let server = limited(1, MINUTE);
    server.fail_next(2, Fault::Status(503));
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![503, 503, 201, 429]);
}

#[test]
fn no_rate_limits_removes_the_defaults() {
    let server = TestServer::builder()
        .no_rate_limits()
        .require_known_traces(false)
        .start()
        .expect("start");
    let calls: Vec<Call<'_>> = (0..250)
        .map(|_| Call::new(SCORES_PATH, score_body().to_string()))
        .collect();
    assert!(statuses(&server, &calls).iter().all(|s| *s == 201));
}

#[test]
fn each_trace_id_has_its_own_window_on_get_and_on_spans() {
    assert_eq!(DEFAULT_PATH_REQUESTS_PER_MINUTE, 200);
    let server = TestServer::start().expect("start");
    let (one_id, other_id) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let path = trace_path(one_id);
    let gets: Vec<Call<'_>> = (0..200).map(|_| Call::get(&path)).collect();
    assert_eq!(statuses(&server, &gets), vec![404; 200]);
    let refused = one(&server, Call::get(&path));
    assert_eq!(
        (refused.status, refused.json()),
        (
            429,
            json!({"error": "Rate limit exceeded: 200 per 1 minute"})
        )
    );
    assert_eq!(refused.header("retry-after"), None);
    // The method is not part of the scope: a PUT of the same path is refused too.
    let put = one(&server, Call::get(&path).method(reqwest::Method::PUT));
    assert_eq!(put.status, 429);

    // Nothing else shares that window.
    assert_eq!(one(&server, Call::get(&trace_path(other_id))).status, 404);
    let spans = json!([{"name": "s", "started_at": "2026-11-29T03:27:52Z"}]).to_string();
    assert_eq!(
        one(&server, Call::new(&spans_path(one_id), spans)).status,
        404
    );
    assert_eq!(one(&server, Call::new(SCORES_PATH, "[]")).status, 422);
    assert_eq!(
        one(&server, Call::new(TRACES_PATH, trace_body().to_string())).status,
        202
    );
    assert_eq!(server.status_count(429), 2);
}

#[test]
fn the_spans_path_counts_every_request_before_validation() {
    let server = TestServer::builder()
        .lenient()
        .rate_limit(SPANS_PATH_TEMPLATE, 2, MINUTE)
        .start()
        .expect("start");
    let path = spans_path(Uuid::from_u128(1));
    let calls = [
        Call::new(&path, "[]"),
        Call::new(&path, "[]").header("X-API-Key", "sk_pp_wrong"),
        Call::new(&path, "[]"),
        Call::new(&path, "[]").omit("X-API-Key"),
    ];
    // Invalid and unauthorised requests count; each key (and no key) has its own window.
    assert_eq!(statuses(&server, &calls), [422, 401, 422, 401]);
    assert_eq!(one(&server, Call::new(&path, "[]")).status, 429);
    assert_eq!(
        one(&server, Call::new(&spans_path(Uuid::from_u128(2)), "[]")).status,
        422
    );
    assert_eq!(
        one(&server, Call::get(&trace_path(Uuid::from_u128(1)))).status,
        404
    );
}

#[test]
fn template_limits_are_set_and_cleared_like_the_others() {
    let path = trace_path(Uuid::from_u128(1));
    let three: Vec<Call<'_>> = (0..3).map(|_| Call::get(&path)).collect();
    let limited = TestServer::builder()
        .rate_limit(TRACE_PATH_TEMPLATE, 2, MINUTE)
        .start()
        .expect("start");
    assert_eq!(statuses(&limited, &three), [404, 404, 429]);
    assert_eq!(
        one(&limited, Call::get(&path)).json(),
        json!({"error": "Rate limit exceeded: 2 per 1 minute"})
    );
    for server in [
        TestServer::builder()
            .no_rate_limits()
            .start()
            .expect("start"),
        TestServer::builder().lenient().start().expect("start"),
    ] {
        let many: Vec<Call<'_>> = (0..201).map(|_| Call::get(&path)).collect();
        assert!(statuses(&server, &many).iter().all(|s| *s == 404));
        let spans = spans_path(Uuid::from_u128(1));
        let many: Vec<Call<'_>> = (0..201).map(|_| Call::new(&spans, "[]")).collect();
        assert!(statuses(&server, &many).iter().all(|s| *s == 422));
    }
}
