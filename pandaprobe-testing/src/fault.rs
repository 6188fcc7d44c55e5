//! What a test can make the server do to a request instead of answering it normally.

use std::time::Duration;

use bytes::Bytes;

/// What the server does to a request instead of (or before) answering it normally.
///
/// Install faults with [`TestServer::fail_next`](crate::TestServer::fail_next),
/// [`TestServer::fail_next_on`](crate::TestServer::fail_next_on) or
/// [`TestServer::set_responder`](crate::TestServer::set_responder). A fault that replaces the
/// answer (all but [`Delay`](Fault::Delay) and [`StoreThenReset`](Fault::StoreThenReset),
/// which answer normally) is not counted by the rate limiter or the trace quota.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and the real server's body for it; nothing is stored.
    ///
    /// * `500`: `text/plain` `Internal Server Error`, then the connection is closed (without
    ///   a `Connection: close` header, like the real server).
    /// * `401`: `{"detail":"Invalid API key"}`; `403`, `404`, `405`, `409`: `{"detail":"..."}`.
    /// * `422`: `{"detail":"Validation error","errors":[{"field":"...","message":"..."}]}`.
    /// * `429`: `{"error":"Rate limit exceeded: 200 per 1 minute"}` (`100` on `/traces`), with
    ///   **no** `Retry-After` header, like the real server's rate limiter.
    /// * `408`, `502`, `503`, `504`: a short `text/plain` body (what a proxy sends).
    /// * anything else: `{"detail":"<reason phrase>"}`.
    ///
    /// A status below 200 or above 999 is answered as `500`.
    Status(u16),
    /// Like [`Fault::Status`] with a `Retry-After` header whose value is passed verbatim
    /// (seconds such as `"2"`, or an HTTP date). A value that is not a valid header value is
    /// left out.
    RetryAfter {
        /// The status to answer with, typically 429 or 503.
        status: u16,
        /// The `Retry-After` header value.
        retry_after: String,
    },
    /// The real server's answer to a trace over the account's quota, on any path:
    /// `429 {"detail":"You've reached the traces limit (N) for your HOBBY plan. Please upgrade
    /// to continue."}`, where `N` is the builder's
    /// [`trace_quota`](crate::TestServerBuilder::trace_quota), or 100 (the HOBBY plan's) when
    /// none is set. Nothing is stored.
    QuotaExceeded,
    /// Wait this long, then handle the request normally (and store it). The store happens
    /// even if the client gave up meanwhile, which is how a timed-out client ends up with an
    /// ambiguous failure and, if it retries, a duplicate score.
    Delay(Duration),
    /// Read the request, store nothing, and close the connection without any answer.
    Reset,
    /// Store the record as if answering 201/202, then close the connection without answering:
    /// the ambiguous failure that makes at-least-once delivery store duplicates. A request
    /// that would not have been stored (invalid, unauthorised, rate limited) is just reset.
    StoreThenReset,
    /// Read the request and never answer. The request ends when the client closes the
    /// connection or the server stops ([`TestServer::stop`](crate::TestServer::stop) or drop).
    Hang,
    /// Answer with exactly this status, these headers and this body; nothing is stored.
    /// Headers whose name or value is not valid HTTP are left out. `x-request-id` is still
    /// echoed unless `headers` sets it, and a `500` still closes the connection.
    Raw {
        /// The status code (a status below 200 or above 999 is answered as `500`).
        status: u16,
        /// Headers to send, in order.
        headers: Vec<(String, String)>,
        /// The response body.
        body: Bytes,
    },
}
