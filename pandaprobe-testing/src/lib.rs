//! An in-process, PandaProbe-compatible HTTP server for tests, with fault injection.
//!
//! [`TestServer`] listens on `127.0.0.1` (a free port by default) and answers
//! `POST /evaluations/trace-scores`, `POST /traces`, `GET /traces/{trace_id}` and
//! `POST /traces/{trace_id}/spans` the way a real PandaProbe server
//! (backend 0.5.0) does: the same checks in the same order, the same status codes and bodies,
//! and, by default, the same awkward behaviour a client must cope with: per-key rate limits,
//! traces stored by a queue of workers some time after their `202`, scores refused with `500`
//! until their trace is stored, and a connection closed after every `500`. What it accepted
//! can be read back with [`TestServer::scores`], [`TestServer::traces`],
//! [`TestServer::stored_trace`] and [`TestServer::requests`].
//!
//! Faults are injected per request with [`TestServer::fail_next`],
//! [`TestServer::fail_next_on`] and [`TestServer::set_responder`]; outages with
//! [`TestServer::stop`] and [`TestServer::restart`].
//!
//! The server runs on its own thread with its own tokio runtime, so it works the same from a
//! plain `#[test]` function, from inside a current-thread runtime and from a multi-thread
//! runtime. Dropping the [`TestServer`] stops it.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use std::time::Duration;
//!
//! use pandaprobe_testing::{TestServer, SCORES_PATH, TRACES_PATH};
//!
//! /// One request on a fresh connection; the status line and body of the answer.
//! fn post(server: &TestServer, path: &str, body: &str) -> std::io::Result<String> {
//!     let mut stream = TcpStream::connect(server.addr())?;
//!     write!(
//!         stream,
//!         "POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\n\
//!          X-Project-Name: my-project\r\nContent-Type: application/json\r\n\
//!          Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
//!         server.api_key(),
//!         body.len(),
//!     )?;
//!     let mut answer = String::new();
//!     stream.read_to_string(&mut answer)?;
//!     Ok(answer)
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::start()?;
//! let trace_id = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";
//! let trace = format!(
//!     r#"{{"trace_id":"{trace_id}","name":"agent-run","started_at":"2026-11-29T03:27:52Z"}}"#
//! );
//! let score = format!(
//!     r#"{{"trace_id":"{trace_id}","name":"accuracy","value":"0.85","data_type":"NUMERIC","source":"PROGRAMMATIC"}}"#
//! );
//!
//! // The trace is accepted at once, and stored by a worker a little later.
//! assert!(post(&server, TRACES_PATH, &trace)?.starts_with("HTTP/1.1 202"));
//! assert!(server.wait_for_stored_traces(1, Duration::from_secs(5)));
//!
//! // Now its score can be stored.
//! assert!(post(&server, SCORES_PATH, &score)?.starts_with("HTTP/1.1 201"));
//! let scores = server.scores();
//! assert_eq!(scores.len(), 1);
//! assert_eq!(scores[0].body["value"], "0.85");
//! # Ok(())
//! # }
//! ```
//!
//! # Defaults
//!
//! | | real server | [`TestServer::start`] (defaults) | [`lenient()`](TestServerBuilder::lenient) |
//! |---|---|---|---|
//! | rate limits, per API key and concrete path (the method not included), fixed window; `429` without `Retry-After`; every request counts, except on `POST /traces` where only valid, authorised ones do | 200/min on scores, 100/min on traces, 200/min on each `/traces/<id>` and each `/traces/<id>/spans` | the same ([`rate_limit`](TestServerBuilder::rate_limit) with a path or [`TRACE_PATH_TEMPLATE`] / [`SPANS_PATH_TEMPLATE`] to change) | none |
//! | trace storage after `202` | a queue served by 2 workers: tens of ms for a small trace, about 6 s for 500 spans | 2 virtual workers, 20 ms + 12 ms per span ([`trace_store_time`](TestServerBuilder::trace_store_time)) | at once |
//! | score whose trace is not stored (yet) | `500`, connection closed | the same ([`require_known_traces`](TestServerBuilder::require_known_traces)) | `201` |
//! | `GET /traces/{id}`, `POST /traces/{id}/spans` before the trace is stored (in the request's project) | `404 {"detail":"Trace <id> not found."}` | the same | the same (traces are stored at once) |
//! | `POST /traces/{id}/spans` (1-500 spans, upserted, parents as sent, visible when answered) | `201 {"span_ids":[...]}` after about 2 ms per span | the same, 2 ms per span ([`span_write_time`](TestServerBuilder::span_write_time)) | at once |
//! | trace containing U+0000 | `202`, never stored | the same | the same (its scores get `201`) |
//! | after any `500` | connection closed, no `Connection: close` header | the same | the same |
//! | score rules (Python `float()` in [0, 1], BOOLEAN, 255-char columns, NUL gives `500`) | as measured | the same | the same |
//! | trace quota | 100 per period on a HOBBY plan, none on paid plans | none ([`trace_quota`](TestServerBuilder::trace_quota)) | none |
//!
//! # Fault injection
//!
//! For every request the server first looks at the queue filled by
//! [`fail_next`](TestServer::fail_next) / [`fail_next_on`](TestServer::fail_next_on) (the
//! oldest entry that matches the request's path wins), then asks the responder set with
//! [`set_responder`](TestServer::set_responder); a request that neither claims is answered
//! normally. See [`Fault`] for what each fault does on the wire.
//!
//! # Performance
//!
//! Per request the server takes two short mutex locks (one more for a score when
//! [`require_known_traces`](TestServerBuilder::require_known_traces) is on, one more when the
//! path is rate limited) and does no logging. Every request is kept (headers and body) for
//! [`TestServer::requests`], and every stored score and accepted trace for
//! [`TestServer::scores`] / [`TestServer::traces`]: for long benchmarks, use
//! [`lenient`](TestServerBuilder::lenient), turn request recording off with
//! [`record_requests(false)`](TestServerBuilder::record_requests) or call
//! [`TestServer::reset_records`] between runs.
//!
//! # Good to know
//!
//! * Connections the server closes (after a `500`, [`Fault::Reset`],
//!   [`Fault::StoreThenReset`], [`TestServer::stop`], a running server's
//!   [`TestServer::restart`]) may still sit in a client's connection pool; the next request on
//!   such a connection fails once with a connection error, as it would against the real
//!   server. Clients must retry on a fresh connection.
//! * "Reset" means the server closes the socket without answering; the client sees an
//!   incomplete message or a reset, either way an error, never a status.
//! * Records, stored traces, the fault queue and the responder survive `stop`/`restart`. A
//!   [`Fault::Delay`] in progress still stores when its delay ends, even after `stop`.
//! * Keys the real server does not know are ignored, as it ignores them.
//! * A stored trace reads back as the real server's database gives it: timestamps in UTC as
//!   Python prints them, object keys in `jsonb` order, floats of 10¹⁶ and more as integers.
//!   Re-sending a trace or a span overwrites its `input`, `output`, `token_usage`,
//!   `model_parameters` and `cost` with what was sent (`null` when absent; measured), keeps
//!   its other columns when absent, merges `metadata` and keeps a span's `parent_span_id`.
//! * `PATCH` and `DELETE` of `/traces/{id}` are not simulated (they get `405`).

#![warn(missing_docs)]

mod answers;
mod builder;
mod closing;
mod contract;
mod endpoints;
mod fault;
mod fault_queue;
mod handler;
mod json_fields;
mod jsonb;
mod python_float;
mod quota;
mod rate_limit;
mod records;
mod score_body;
mod server;
mod span_body;
mod state;
mod sync;
mod test_server;
mod timestamp;
mod tls;
mod trace_body;
mod trace_db;
mod trace_paths;
mod trace_store;
mod trace_tree;

pub use builder::{
    TestServerBuilder, DEFAULT_PATH_REQUESTS_PER_MINUTE, DEFAULT_SPAN_WRITE_TIME,
    DEFAULT_TRACE_STORE_BASE, DEFAULT_TRACE_STORE_PER_SPAN, DEFAULT_TRACE_STORE_WORKERS,
};
pub use endpoints::{
    DEFAULT_API_KEY, HOSTED_SCORES_PER_MINUTE, HOSTED_TRACES_PER_MINUTE, SCORES_PATH, TRACES_PATH,
};
pub use fault::Fault;
pub use records::{ReceivedRequest, RequestInfo, StoredRecord};
pub use test_server::TestServer;
pub use trace_paths::{spans_path, trace_path, SPANS_PATH_TEMPLATE, TRACE_PATH_TEMPLATE};
pub use trace_tree::trace_tree;

/// Runs the README's examples as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
