//! Helpers shared by the integration tests: a reqwest client with the usual headers, raw-TCP
//! requests, and the bodies of a valid score and trace. Every wait has a deadline.

#![allow(dead_code)] // each test file uses its own subset

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use pandaprobe_testing::TestServer;
use serde_json::{json, Value};

pub const TRACE_ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
pub const PROJECT: &str = "my-project";
pub const WAIT: Duration = Duration::from_secs(5);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// What the client saw.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request with the usual headers, minus `omit`, plus `extra`.
pub struct Call<'a> {
    method: reqwest::Method,
    path: &'a str,
    body: String,
    omit: Vec<&'a str>,
    extra: Vec<(&'a str, &'a str)>,
}

impl<'a> Call<'a> {
    pub fn new(path: &'a str, body: impl Into<String>) -> Self {
        Call {
            method: reqwest::Method::POST,
            path,
            body: body.into(),
            omit: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// A `GET` with no body.
    pub fn get(path: &'a str) -> Self {
        Call::new(path, "").method(reqwest::Method::GET)
    }

    pub fn method(mut self, method: reqwest::Method) -> Self {
        self.method = method;
        self
    }

    pub fn omit(mut self, name: &'a str) -> Self {
        self.omit.push(name);
        self
    }

    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.omit.push(name);
        self.extra.push((name, value));
        self
    }

    pub async fn send(
        &self,
        client: &reqwest::Client,
        server: &TestServer,
    ) -> Result<Reply, reqwest::Error> {
        self.send_to(client, &server.url(), server.api_key()).await
    }

    pub async fn send_to(
        &self,
        client: &reqwest::Client,
        url: &str,
        api_key: &str,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = client.request(self.method.clone(), format!("{url}{}", self.path));
        let defaults = [
            ("X-API-Key", api_key),
            ("X-Project-Name", PROJECT),
            ("Content-Type", "application/json"),
        ];
        for (name, value) in defaults {
            if !self.omit.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                request = request.header(name, value);
            }
        }
        for (name, value) in &self.extra {
            request = request.header(*name, *value);
        }
        let response = request.body(self.body.clone()).send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

pub fn score_body() -> Value {
    json!({
        "trace_id": TRACE_ID,
        "name": "accuracy",
        "value": "0.85",
        "data_type": "NUMERIC",
        "source": "PROGRAMMATIC",
        "reason": "close enough",
        "metadata": {"judge": "unit"}
    })
}

pub fn score_with(key: &str, value: Value) -> String {
    let mut body = score_body();
    body[key] = value;
    body.to_string()
}

pub fn score_without(key: &str) -> String {
    let mut body = score_body();
    body.as_object_mut().expect("object").remove(key);
    body.to_string()
}

pub fn trace_body() -> Value {
    json!({
        "trace_id": TRACE_ID,
        "name": "agent-run",
        "status": "COMPLETED",
        "started_at": "2026-11-29T03:27:52.093623+00:00",
        "ended_at": "2026-11-29T03:27:53.000000+00:00",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "tags": ["a", "b"],
        "spans": [{
            "span_id": "6a0f5c1e-7c43-4a55-9d0f-1b0e2b8f8d11",
            "name": "llm-call",
            "kind": "LLM",
            "status": "OK",
            "started_at": "2026-11-29T03:27:52.100000+00:00",
            "token_usage": {"prompt_tokens": 3, "completion_tokens": 5},
            "cost": {"total": 0.0001}
        }]
    })
}

pub fn trace_with(key: &str, value: Value) -> String {
    let mut body = trace_body();
    body[key] = value;
    body.to_string()
}

pub fn trace_without(key: &str) -> String {
    let mut body = trace_body();
    body.as_object_mut().expect("object").remove(key);
    body.to_string()
}

pub fn span_with(key: &str, value: Value) -> String {
    let mut body = trace_body();
    body["spans"][0][key] = value;
    body.to_string()
}

/// Sends `calls` one after another and returns the statuses (panics on transport errors).
pub fn statuses(server: &TestServer, calls: &[Call<'_>]) -> Vec<u16> {
    let client = client();
    runtime().block_on(async {
        let mut out = Vec::new();
        for call in calls {
            let reply = call.send(&client, server).await.expect("request");
            out.push(reply.status);
        }
        out
    })
}

pub fn one(server: &TestServer, call: Call<'_>) -> Reply {
    let client = client();
    runtime()
        .block_on(call.send(&client, server))
        .expect("request")
}

pub fn one_result(server: &TestServer, call: Call<'_>) -> Result<Reply, reqwest::Error> {
    let client = client();
    runtime().block_on(call.send(&client, server))
}

pub fn raw_request(path: &str, body: &str, api_key: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {api_key}\r\n\
         X-Project-Name: {PROJECT}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one response (headers plus a `Content-Length` body) from a raw socket.
pub fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// True when the peer closed the socket (EOF or reset) within the deadline.
pub fn peer_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// A server for tests about something else: no rate limits, traces stored at once, scores
/// accepted for any trace.
pub fn lenient() -> TestServer {
    TestServer::builder().lenient().start().expect("start")
}

/// A valid score for `trace_id`.
pub fn score_for(trace_id: &str) -> String {
    score_with("trace_id", json!(trace_id))
}

/// A valid trace with `trace_id` and `spans` minimal spans.
pub fn trace_with_spans(trace_id: &str, spans: usize) -> String {
    let spans: Vec<Value> = (0..spans)
        .map(|i| json!({"name": format!("s{i}"), "started_at": "2026-11-29T03:27:52Z"}))
        .collect();
    json!({
        "trace_id": trace_id,
        "name": "agent-run",
        "started_at": "2026-11-29T03:27:52Z",
        "spans": spans,
    })
    .to_string()
}

/// Sends one raw request on a fresh connection and reads the whole answer; the stream is
/// left open so the caller can see whether the server closes it.
pub fn raw_exchange(server: &TestServer, request: &str) -> (TcpStream, String) {
    use std::io::Write;
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let response = read_response(&mut stream);
    (stream, response)
}

/// The header lines of a raw response, lower-cased.
pub fn raw_headers(response: &str) -> Vec<String> {
    response
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// True when the peer closed the socket cleanly (EOF, not a reset) within the deadline.
pub fn clean_eof(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set read timeout");
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}
