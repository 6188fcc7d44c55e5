//! Nothing secret in any output, and no outcome claimed that did not happen: a server that
//! echoes the request's headers in its error (a proxy, a WAF) cannot put the API key into a
//! log line or a drop event, nor forge log lines with CR/LF; an endpoint with credentials is
//! refused without echoing them; a 2xx counts as delivered when its status arrives; a request
//! that never reached a server is not "maybe delivered".

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use bytes::Bytes;
use common::{client_for, lenient_server, logs, Drops};
use pandaprobe::{Client, Score, Uuid};
use pandaprobe_testing::Fault;

#[test]
fn an_echoed_api_key_never_reaches_the_log_or_the_hook_and_cr_lf_are_escaped() {
    let server = lenient_server();
    let key = server.api_key().to_owned();
    let logs = logs();
    let echo = format!(
        "{{\"detail\":\"bad request; you sent x-api-key: {key}\\r\\nWARN pandaprobe: forged\"}}"
    );
    let plain = format!("Forbidden\r\nx-api-key: {key}\r\nERROR forged line");
    let mut n = 0u32;
    let answers = std::sync::Mutex::new(0u32);
    server.set_responder(move |_| {
        let mut i = answers.lock().unwrap_or_else(|e| e.into_inner());
        *i += 1;
        let even = (*i).is_multiple_of(2);
        let body = if even { &echo } else { &plain };
        Some(Fault::Raw {
            status: if even { 422 } else { 403 },
            headers: vec![],
            body: Bytes::from(body.clone()),
        })
    });
    let drops = Drops::default();
    let client = client_for(&server).on_drop(drops.hook()).build().unwrap();
    let trace_id = Uuid::new_v4();
    for i in 0..4 {
        client
            .score(Score::numeric(trace_id, format!("s{i}"), 0.5))
            .unwrap();
        n += 1;
    }
    let _ = client.flush(Duration::from_secs(30));
    let events = drops.events();
    assert_eq!(events.len() as u32, n);
    for event in &events {
        let text = format!("{event} {:?} {:?}", event.message(), event);
        assert!(!text.contains(&key), "{text}");
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
    }
    assert!(events
        .iter()
        .any(|e| e.message().is_some_and(|m| m.contains("[redacted]"))));
    assert!(
        logs.lines_with(&[&key]).is_empty(),
        "the key reached the log"
    );
    assert!(logs
        .lines_with(&["forged"])
        .iter()
        .all(|l| !l.starts_with("WARN pandaprobe: forged") && !l.starts_with("ERROR forged")));
}

#[test]
fn an_endpoint_with_credentials_is_refused_without_echoing_them() {
    let err = Client::builder()
        .api_key("sk_pp_x")
        .project_name("p")
        .endpoint("http://alice:hunter2@127.0.0.1:9")
        .build()
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("hunter2") && !text.contains("alice"),
        "{text}"
    );
    let debug = format!(
        "{:?}",
        Client::builder().endpoint("http://alice:hunter2@127.0.0.1:9")
    );
    assert!(!debug.contains("hunter2"), "{debug}");
    let port0 = Client::builder()
        .api_key("sk_pp_x")
        .project_name("p")
        .endpoint("http://127.0.0.1:0")
        .build()
        .unwrap_err();
    assert!(port0.to_string().contains("port 0"), "{port0}");
}

/// Reads one request's head and body (by Content-Length) from `stream`.
fn read_request(stream: &mut std::net::TcpStream) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return;
            }
        }
    }
}

#[test]
fn a_201_whose_body_never_comes_counts_as_delivered() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        // One connection, one request: the status and a promised body that never comes.
        if let Ok((mut stream, _)) = listener.accept() {
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            read_request(&mut stream);
            let _ = stream.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{");
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest); // until the client closes
        }
    });
    let client = Client::builder()
        .api_key("sk_pp_test")
        .project_name("p")
        .endpoint(format!("http://{addr}"))
        .request_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    client
        .score(Score::numeric(Uuid::new_v4(), "s", 0.5))
        .unwrap();
    client.flush(Duration::from_secs(20)).expect("delivered");
    let stats = client.stats();
    assert_eq!((stats.scores.sent, stats.scores.ambiguous), (1, 0));
    drop(client);
    server.join().unwrap();
}

#[test]
fn https_to_a_silent_port_is_no_maybe_delivered() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::thread::spawn(move || {
        // Accept and say nothing: the TLS handshake never completes.
        let conns: Vec<_> = (0..2).filter_map(|_| listener.accept().ok()).collect();
        conns.len()
    });
    let drops = Drops::default();
    let client = Client::builder()
        .api_key("sk_pp_test")
        .project_name("p")
        .endpoint(format!("https://{addr}"))
        .connect_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(1))
        .max_retries(1)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(10))
        .on_drop(drops.hook())
        .build()
        .unwrap();
    client
        .score(Score::numeric(Uuid::new_v4(), "s", 0.5))
        .unwrap();
    let _ = client.flush(Duration::from_secs(20));
    let stats = client.stats();
    assert_eq!(stats.scores.ambiguous, 0, "{}", stats.scores);
    assert_eq!(stats.scores.dropped.total(), 1, "{}", stats.scores);
    assert_eq!(stats.scores.dropped.shutdown_in_flight, 0);
    drop(client);
    assert_eq!(accepted.join().unwrap(), 2);
}
