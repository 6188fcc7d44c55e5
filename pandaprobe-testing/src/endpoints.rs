//! The paths the server answers on, its default API key, and the hosted service's rate
//! limits: what the rest of the server and its users refer to.

/// The API key a [`TestServer`](crate::TestServer) accepts unless [`TestServerBuilder::api_key`](crate::TestServerBuilder::api_key) sets another.
pub const DEFAULT_API_KEY: &str = "sk_pp_test";

/// The path scores are posted to.
pub const SCORES_PATH: &str = "/evaluations/trace-scores";

/// The path traces are posted to.
pub const TRACES_PATH: &str = "/traces";

/// Scores per minute per API key the hosted service (and the backend's default) allows on
/// [`SCORES_PATH`]: the default rate limit of a [`TestServer`](crate::TestServer).
pub const HOSTED_SCORES_PER_MINUTE: u32 = 200;

/// Traces per minute per API key the hosted service (and the backend's code) allows on
/// [`TRACES_PATH`]: the default rate limit of a [`TestServer`](crate::TestServer).
pub const HOSTED_TRACES_PER_MINUTE: u32 = 100;
