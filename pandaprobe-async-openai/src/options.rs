//! The wrapper's switches, shared by every traced call.

/// Name recorded as `metadata.provider` unless [`TracedClient::provider`] says otherwise.
///
/// [`TracedClient::provider`]: crate::TracedClient::provider
pub const DEFAULT_PROVIDER: &str = "openai";

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) capture_content: bool,
    pub(crate) provider: String,
}
