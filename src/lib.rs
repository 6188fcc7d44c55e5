//! # pandaprobe
//!
//! The Rust SDK for [PandaProbe](https://pandaprobe.com), open-source observability for LLM
//! agents: attach **scores** (user feedback, quality metrics, pass/fail checks) to **traces**
//! from a hot path, without ever waiting on the network.
//!
//! ```
//! use std::time::Duration;
//! use pandaprobe::{Client, Score};
//! use pandaprobe_testing::TestServer; // a PandaProbe in this process (a dev-dependency)
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = TestServer::builder().lenient().start()?;
//!     let client = Client::builder()
//!         .api_key(server.api_key()) // your sk_pp_… key
//!         .project_name("my-project")
//!         .endpoint(server.url()) // default https://api.pandaprobe.com
//!         .build()?;
//!
//!     // Open a trace, end it, then score it by its id.
//!     let trace = client.start_trace("my-agent");
//!     let trace_id = trace.trace_id();
//!     trace.end();
//!
//!     client.score(Score::new(trace_id, "user_satisfaction", "0.9").reason("thumbs up"))?;
//!     client.score(Score::boolean(trace_id, "hallucination_free", true))?;
//!     client.flush(Duration::from_secs(10))?; // Ok: every score above is delivered
//!     assert_eq!(client.stats().scores.sent, 2);
//!     Ok(())
//! }
//! ```
//!
//! ## How a score travels
//!
//! [`Client::score`] validates the score against the server's rules (a bad one is an error at
//! the call, and nothing is queued), puts it into a bounded queue and returns: it never blocks
//! and never touches the network. A background worker, on its own thread and its own tokio
//! runtime, sends queued records as concurrent requests over kept-alive connections, retries
//! what can be retried with exponential backoff, and answers [`Client::flush`] and
//! [`Client::shutdown`]. Nothing depends on the caller's runtime: the blocking calls work with
//! no runtime and inside any tokio runtime; async variants exist for async callers.
//!
//! ## Delivery semantics
//!
//! Every accepted record ends as delivered or dropped for a named reason, counted in
//! [`Stats`] and logged under the `pandaprobe` tracing target. Delivery is **at least once**:
//! the server has no idempotency for scores, so a retry after an ambiguous failure (a timeout
//! or a broken connection after the request was sent) can store a score twice;
//! [`RecordStats::ambiguous`] counts those retries.
//!
//! ## Shutdown
//!
//! Dropping the last [`Client`] handle shuts it down, delivering what is queued within
//! [`ClientBuilder::shutdown_timeout`]. For the global client, keep the guard of [`init`]:
//! `let _guard = pandaprobe::init(client);` at the top of `main`.
//!
//! ## `tracing` integration
//!
//! With the `tracing-layer` feature, `TracingLayer` records the `tracing` spans you mark
//! (`pandaprobe.trace`, `pandaprobe.kind`) as traces and spans. [`current_trace_id`] finds the
//! trace of the current span, or of a trace entered with [`Trace::enter`] or
//! [`Trace::in_scope`].
//!
//! ## Supported Rust
//!
//! The minimum supported Rust version is the `rust-version` in `Cargo.toml`.
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod budget;
mod capture;
mod client;
mod config;
mod context;
mod drop_event;
mod error;
mod fork;
mod global;
mod producer;
mod protocol;
mod record;
mod record_size;
mod score;
mod stats;
mod text;
mod token_usage;
mod trace;
mod trace_data;
#[cfg(feature = "tracing-layer")]
mod tracing_layer;
mod worker;

pub use capture::Capture;
pub use client::{Client, WeakClient};
pub use config::{
    ClientBuilder, QueueFullPolicy, DEFAULT_BATCH_SIZE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT,
    DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_QUEUE_BYTES, DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_INITIAL_BACKOFF, DEFAULT_RETRY_MAX_BACKOFF,
    DEFAULT_RETRY_MAX_ELAPSED, DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use context::{current_trace_id, EnteredSpan, EnteredTrace, InScope};
pub use drop_event::{DropEvent, DropReason, RecordKind};
pub use error::{ConfigError, FlushError, ScoreError, StartError, Waiting};
pub use global::{
    client, flush, flush_async, init, score, shutdown, shutdown_async, start_trace, trace,
    ClientGuard,
};
/// The reqwest the SDK sends with, for [`ClientBuilder::configure_http`].
pub use reqwest;
pub use score::{IntoTraceId, ParseScoreDataTypeError, Score, ScoreDataType};
pub use stats::{Dropped, RecordStats, Stats};
pub use text::Text;
pub use token_usage::TokenUsage;
pub use trace::{
    Span, SpanKind, SpanStatus, Trace, TraceBuilder, TraceStatus, MAX_SPANS_PER_REQUEST,
};
#[cfg(feature = "tracing-layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-layer")))]
pub use tracing_layer::{TracingLayer, DEFAULT_MAX_TRACE_DURATION};
pub use uuid::Uuid;

// The handles are shared across threads and tasks: promised in their docs, held here.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Client>();
    shared::<WeakClient>();
    shared::<Trace>();
    shared::<Span>();
    shared::<ClientGuard>();
    shared::<Score>();
    shared::<Stats>();
    shared::<DropEvent>();
    shared::<ScoreError>();
    shared::<FlushError>();
    shared::<ConfigError>();
    shared::<Capture>();
};
#[cfg(feature = "tracing-layer")]
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<TracingLayer>();
};

/// The README's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
