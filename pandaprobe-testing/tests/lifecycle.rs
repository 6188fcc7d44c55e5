//! Connections and lifecycle: keep-alive, closing after a 500, stop and restart, ports,
//! runtimes, dropping, waits, resetting records.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use pandaprobe_testing::{Fault, TestServer, DEFAULT_API_KEY, SCORES_PATH, TRACES_PATH};
use serde_json::json;

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = lenient();
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    for _ in 0..3 {
        let request = raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY);
        stream.write_all(request.as_bytes()).expect("write");
        let response = read_response(&mut stream);
        assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    }
    assert_eq!(server.score_count(), 3);
}

#[test]
fn every_500_is_delivered_then_the_connection_closes_without_saying_so() {
    let server = TestServer::builder()
        .no_rate_limits()
        .require_known_traces(true)
        .start()
        .expect("start");
    let too_long = score_with("name", json!("n".repeat(256)));
    let nul = score_with("reason", json!("\u{0}"));
    let requests = [
        // A score whose trace is not stored, and the database refusing a score.
        raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY),
        raw_request(SCORES_PATH, &too_long, DEFAULT_API_KEY),
        raw_request(SCORES_PATH, &nul, DEFAULT_API_KEY),
    ];
    server.fail_next(1, Fault::Status(500));
    let injected = raw_request(TRACES_PATH, &trace_body().to_string(), DEFAULT_API_KEY);
    for request in std::iter::once(&injected).chain(&requests) {
        let (mut stream, response) = raw_exchange(&server, request);
        assert!(response.starts_with("HTTP/1.1 500"), "{response}");
        assert!(
            response.ends_with("\r\n\r\nInternal Server Error"),
            "{response}"
        );
        let headers = raw_headers(&response);
        assert!(
            !headers.iter().any(|h| h.starts_with("connection:")),
            "{headers:?}"
        );
        assert!(clean_eof(&mut stream), "the server keeps the socket open");
    }
    assert_eq!(server.status_count(500), 4);
}

#[test]
fn other_statuses_keep_the_connection_alive() {
    let server = lenient();
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    for status in [201u16, 422, 429, 503] {
        if status != 201 && status != 422 {
            server.fail_next(1, Fault::Status(status));
        }
        let body = if status == 422 {
            "[]".to_owned()
        } else {
            score_body().to_string()
        };
        let request = raw_request(SCORES_PATH, &body, DEFAULT_API_KEY);
        stream.write_all(request.as_bytes()).expect("write");
        let response = read_response(&mut stream);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{response}"
        );
    }
}

#[test]
fn stop_refuses_and_closes_then_restart_listens_on_the_same_port() {
    let server = lenient();
    let url = server.url();
    let client = client();
    let rt = runtime();
    let call = Call::new(SCORES_PATH, score_body().to_string());
    assert_eq!(
        rt.block_on(call.send(&client, &server)).expect("up").status,
        201
    );

    // An idle kept-alive connection is closed by stop().
    let mut idle = TcpStream::connect(server.addr()).expect("connect");
    idle.write_all(raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY).as_bytes())
        .expect("write");
    idle.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 201"));

    server.stop();
    assert!(peer_closed(&mut idle));
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "still listening"
    );
    let down = rt.block_on(call.send(&client, &server));
    assert!(down.is_err(), "{down:?}");
    server.stop(); // stopping twice is harmless

    server.restart().expect("restart");
    assert_eq!(server.url(), url);
    assert_eq!(
        rt.block_on(call.send(&client, &server))
            .expect("up again")
            .status,
        201
    );
    assert_eq!(server.score_count(), 3, "records survive a restart");
    // restart() on a running server is a stop + listen: kept-alive connections are closed,
    // so use a fresh client (a pooled connection would fail once, as with a real restart).
    server.restart().expect("restart while running");
    let fresh = self::client();
    assert_eq!(
        rt.block_on(call.send(&fresh, &server)).expect("up").status,
        201
    );
}

#[test]
fn bind_later_reserves_the_port_until_restart() {
    let server = TestServer::builder()
        .lenient()
        .bind_later()
        .start()
        .expect("start");
    assert_ne!(server.addr().port(), 0);
    assert!(TcpStream::connect(server.addr()).is_err());
    let call = Call::new(SCORES_PATH, score_body().to_string());
    assert!(one_result(&server, Call::new(SCORES_PATH, score_body().to_string())).is_err());
    server.restart().expect("listen");
    assert_eq!(one(&server, call).status, 201);
}

#[test]
fn fixed_port_and_busy_port() {
    let first = TestServer::start().expect("start");
    let busy = TestServer::builder().port(first.addr().port()).start();
    assert!(busy.is_err(), "the port is taken");
    let port = first.addr().port();
    drop(first);
    let again = TestServer::builder().port(port).start().expect("rebind");
    assert_eq!(again.addr().port(), port);
    assert_eq!(again.url(), format!("http://127.0.0.1:{port}"));
}

#[test]
fn works_inside_a_current_thread_runtime() {
    let rt = runtime();
    rt.block_on(async {
        let server = lenient();
        let client = client();
        let reply = Call::new(SCORES_PATH, score_body().to_string())
            .send(&client, &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 201);
        assert!(server.wait_for_scores(1, WAIT));
        server.stop();
        server.restart().expect("restart");
        // Dropping inside the runtime must not panic or hang.
        drop(server);
    });
}

#[test]
fn works_inside_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = TestServer::builder()
            .lenient()
            .worker_threads(2)
            .start()
            .expect("start");
        let client = client();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let client = client.clone();
            let url = server.url();
            tasks.push(tokio::spawn(async move {
                Call::new(SCORES_PATH, score_body().to_string())
                    .send_to(&client, &url, DEFAULT_API_KEY)
                    .await
                    .map(|r| r.status)
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("join").expect("request"), 201);
        }
        assert_eq!(server.score_count(), 40);
        server.stop();
        assert!(TcpStream::connect(server.addr()).is_err());
        server.restart().expect("restart");
        // The pooled connections were closed by stop(): use a fresh client.
        let reply = Call::new(SCORES_PATH, score_body().to_string())
            .send(&self::client(), &server)
            .await
            .expect("request");
        assert_eq!(reply.status, 201);
    });
}

#[test]
fn drop_with_a_hung_request_is_bounded() {
    let server = lenient();
    server.fail_next(1, Fault::Hang);
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .write_all(raw_request(SCORES_PATH, &score_body().to_string(), DEFAULT_API_KEY).as_bytes())
        .expect("write");
    assert!(server.wait_for_requests(1, WAIT));
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < WAIT);
    assert!(peer_closed(&mut stream));
}

#[test]
fn waits_time_out_and_reset_records_forgets() {
    let server = lenient();
    let started = Instant::now();
    assert!(!server.wait_for_scores(1, Duration::from_millis(50)));
    assert!(!server.wait_for_requests(1, Duration::from_millis(50)));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(server.wait_for_scores(0, Duration::ZERO));

    let calls = [
        Call::new(TRACES_PATH, trace_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(statuses(&server, &calls), vec![202, 201]);
    assert_eq!(server.request_count(), 2);
    server.reset_records();
    assert_eq!(server.request_count(), 0);
    assert_eq!(server.score_count(), 0);
    assert_eq!(server.trace_count(), 0);
    assert_eq!(server.status_count(201), 0);
    assert!(server.requests().is_empty());
    server.set_responder(|info| (info.index == 0).then_some(Fault::Status(503)));
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, score_body().to_string()),
    ];
    assert_eq!(
        statuses(&server, &calls),
        vec![503, 201],
        "index restarts at 0"
    );
}

#[test]
fn record_requests_off_still_counts() {
    let server = TestServer::builder()
        .lenient()
        .record_requests(false)
        .start()
        .expect("start");
    let calls = [
        Call::new(SCORES_PATH, score_body().to_string()),
        Call::new(SCORES_PATH, "[]"),
    ];
    assert_eq!(statuses(&server, &calls), vec![201, 422]);
    assert!(server.requests().is_empty());
    assert_eq!(server.request_count(), 2);
    assert_eq!(server.status_count(422), 1);
    assert_eq!(server.score_count(), 1);
}

#[test]
fn malformed_http_does_not_hurt_the_server() {
    let server = lenient();
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /traces HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /traces HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        b"\x00\x01\x02\xff",
    ] {
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        let _ = stream.write_all(junk);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = peer_closed(&mut stream);
    }
    let reply = one(&server, Call::new(SCORES_PATH, score_body().to_string()));
    assert_eq!(reply.status, 201);
}
