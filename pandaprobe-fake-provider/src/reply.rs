//! The scripted answers and the constants answers use.

/// The answer given when the script queue is empty.
pub const DEFAULT_ANSWER: &str = "Hello from the fake provider.";

/// The model named in answers when the request names none.
pub const DEFAULT_MODEL: &str = "fake-model";

/// The prompt token count every answer reports.
pub const PROMPT_TOKENS: u64 = 12;

/// Of the prompt tokens, those every answer reports read from the prompt cache
/// (`prompt_tokens_details.cached_tokens`, `input_tokens_details.cached_tokens`).
pub const CACHED_TOKENS: u64 = 4;

/// The reasoning tokens every answer reports (`completion_tokens_details.reasoning_tokens`,
/// `output_tokens_details.reasoning_tokens`), counted in its completion tokens as OpenAI
/// counts them: an answer of n words reports n + 2 completion tokens.
pub const REASONING_TOKENS: u64 = 2;

/// One scripted answer to a chat completion or Responses API request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// An assistant message with this content; streamed word by word when asked to stream.
    Text(String),
    /// An assistant message calling one tool with these JSON arguments (a string, as OpenAI
    /// sends them); streamed as `delta.tool_calls` fragments (chat) or argument deltas
    /// (Responses API) when asked to stream.
    ToolCall {
        /// The function's name.
        name: String,
        /// The arguments, as a JSON text.
        arguments: String,
    },
    /// An HTTP error answer in OpenAI's error shape.
    Error {
        /// The HTTP status, e.g. 429 or 500.
        status: u16,
        /// The error message.
        message: String,
    },
    /// A web search the provider ran itself, then an answer with this text: in the Responses
    /// API a `web_search_call` output item before the message (the text streamed as deltas);
    /// in chat completions just the text.
    WebSearch {
        /// The search query.
        query: String,
        /// The answer's text.
        answer: String,
    },
    /// An answer cut midway: a stream sends this many content chunks of [`DEFAULT_ANSWER`],
    /// then the connection is cut; a non-streamed request gets its connection cut at once.
    CutAfterChunks(usize),
}

impl Reply {
    /// A text answer.
    pub fn text(content: impl Into<String>) -> Reply {
        Reply::Text(content.into())
    }

    /// A tool-call answer.
    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Reply {
        Reply::ToolCall {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    /// A web search, then an answer (see [`Reply::WebSearch`]).
    pub fn web_search(query: impl Into<String>, answer: impl Into<String>) -> Reply {
        Reply::WebSearch {
            query: query.into(),
            answer: answer.into(),
        }
    }

    /// An HTTP error answer.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::Error {
            status,
            message: message.into(),
        }
    }
}
