//! Token counts of a model call, under the keys PandaProbe's UI and its Python SDK use.

use serde_json::{Map, Value};

/// The token counts of one model call: a span's `token_usage`.
///
/// Sent as `{"prompt_tokens", "completion_tokens", "total_tokens"}` (the total is their sum,
/// the two the server adds up for a trace), plus `reasoning_tokens`, `cache_read_tokens` and
/// `cache_creation_tokens` when set: the keys the Python SDK's wrappers map OpenAI's
/// `completion_tokens_details.reasoning_tokens`, `prompt_tokens_details.cached_tokens` and
/// Anthropic's `cache_creation_input_tokens` to. The details are parts of the two counts, as
/// the providers report them, not additions to them.
///
/// ```
/// use pandaprobe::TokenUsage;
///
/// let usage = TokenUsage::new(1_200, 300).with_cache_read_tokens(1_024).with_reasoning_tokens(256);
/// assert_eq!(usage.total_tokens(), 1_500);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenUsage {
    /// Tokens in the request (OpenAI's `prompt_tokens`, the Responses API's `input_tokens`).
    pub prompt_tokens: u64,
    /// Tokens in the answer (`completion_tokens`, `output_tokens`).
    pub completion_tokens: u64,
    /// Of the answer's tokens, those spent reasoning.
    pub reasoning_tokens: Option<u64>,
    /// Of the request's tokens, those read from the provider's prompt cache.
    pub cache_read_tokens: Option<u64>,
    /// Of the request's tokens, those written to the provider's prompt cache.
    pub cache_creation_tokens: Option<u64>,
}

impl TokenUsage {
    /// The two counts every provider reports; the details start unset.
    #[must_use]
    pub const fn new(prompt_tokens: u64, completion_tokens: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens,
            completion_tokens,
            reasoning_tokens: None,
            cache_read_tokens: None,
            cache_creation_tokens: None,
        }
    }

    /// Sets `reasoning_tokens`.
    #[must_use]
    pub const fn with_reasoning_tokens(mut self, tokens: u64) -> TokenUsage {
        self.reasoning_tokens = Some(tokens);
        self
    }

    /// Sets `cache_read_tokens`.
    #[must_use]
    pub const fn with_cache_read_tokens(mut self, tokens: u64) -> TokenUsage {
        self.cache_read_tokens = Some(tokens);
        self
    }

    /// Sets `cache_creation_tokens`.
    #[must_use]
    pub const fn with_cache_creation_tokens(mut self, tokens: u64) -> TokenUsage {
        self.cache_creation_tokens = Some(tokens);
        self
    }

    /// `prompt_tokens + completion_tokens` (saturating).
    pub const fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// The span's `token_usage` object.
    pub(crate) fn to_json(self) -> Value {
        let mut map = Map::new();
        map.insert("prompt_tokens".into(), self.prompt_tokens.into());
        map.insert("completion_tokens".into(), self.completion_tokens.into());
        map.insert("total_tokens".into(), self.total_tokens().into());
        let details = [
            ("reasoning_tokens", self.reasoning_tokens),
            ("cache_read_tokens", self.cache_read_tokens),
            ("cache_creation_tokens", self.cache_creation_tokens),
        ];
        for (key, count) in details {
            if let Some(count) = count {
                map.insert(key.into(), count.into());
            }
        }
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::TokenUsage;

    #[test]
    fn the_details_are_sent_only_when_set() {
        let plain = TokenUsage::new(3, 5).to_json();
        assert_eq!(
            plain,
            json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
        );
        let detailed = TokenUsage::new(3, 5)
            .with_reasoning_tokens(2)
            .with_cache_read_tokens(1)
            .with_cache_creation_tokens(0)
            .to_json();
        assert_eq!(
            detailed,
            json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
                   "reasoning_tokens": 2, "cache_read_tokens": 1, "cache_creation_tokens": 0})
        );
    }

    #[test]
    fn the_total_saturates() {
        assert_eq!(TokenUsage::new(u64::MAX, 1).total_tokens(), u64::MAX);
    }
}
