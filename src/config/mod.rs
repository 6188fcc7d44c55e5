//! Configuration, bottom up: the defaults (`defaults`), the `PANDAPROBE_*` environment
//! (`env`), certificates and proxies (`network`), the checked settings the client and its
//! worker run on (`settings`), the builder (`builder`, with the setters of how records travel
//! in `tuning` and of how the server is reached in `connection`), and the checks from one to
//! the other (`resolve`). `ClientBuilder::build` is beside the client it starts.

mod builder;
mod connection;
mod defaults;
mod env;
mod network;
mod resolve;
mod settings;
mod tuning;

pub use builder::ClientBuilder;
pub use defaults::{
    QueueFullPolicy, DEFAULT_BATCH_SIZE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT,
    DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_QUEUE_BYTES, DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_INITIAL_BACKOFF, DEFAULT_RETRY_MAX_BACKOFF,
    DEFAULT_RETRY_MAX_ELAPSED, DEFAULT_SHUTDOWN_TIMEOUT,
};
pub(crate) use settings::{Config, RateLimit, MAX_DURATION};
