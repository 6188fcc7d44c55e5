//! Traces [`async-openai`](https://docs.rs/async-openai) calls into PandaProbe: every chat
//! completion (plain or streamed) and every embeddings call becomes an `LLM` or `EMBEDDING` span
//! with the model, the messages, the output (tool calls included), token usage, model
//! parameters and, when streaming, the time of the first token.
//!
//! Wrap the `async_openai::Client` once with [`OpenAIExt::traced`] and call it as before. Each
//! call joins the current trace (a [`pandaprobe::Trace`] entered or [`in_scope`], or the
//! nearest `tracing` span the `TracingLayer` records) and opens a trace of its own otherwise.
//!
//! ```no_run
//! use async_openai::types::chat::{
//!     ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
//! };
//! use pandaprobe_async_openai::OpenAIExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let probe = pandaprobe::Client::from_env()?;
//! let openai = async_openai::Client::new().traced(&probe);
//!
//! let request = CreateChatCompletionRequestArgs::default()
//!     .model("gpt-4o-mini")
//!     .messages([ChatCompletionRequestUserMessageArgs::default()
//!         .content("Say hi")
//!         .build()?
//!         .into()])
//!     .build()?;
//! let answer = openai.chat().create(request).await?;
//! # let _ = answer;
//! probe.flush(std::time::Duration::from_secs(5))?;
//! # Ok(()) }
//! ```
//!
//! # What a span holds
//!
//! | span field | chat completion | embeddings |
//! |---|---|---|
//! | `name`, `kind` | `openai-chat`, `LLM` | `openai-embeddings`, `EMBEDDING` |
//! | `model` | the model that answered (the requested one if the call failed) | same |
//! | `input` | `{"messages": [...], "tools": [...]}` as sent | `{"input": ...}` as sent |
//! | `output` | the assistant message (`role`, `content`, `tool_calls`, `refusal`); a list of them when `n > 1` | `{"embeddings": n, "dimensions": d}`, never the vectors |
//! | `token_usage` | `prompt_tokens`, `completion_tokens`, `total_tokens` | `prompt_tokens` |
//! | `model_parameters` | `temperature`, `top_p`, `max_tokens`, `max_completion_tokens`, `n`, `seed`, `stop`, penalties, `reasoning_effort`, `tool_choice`, `parallel_tool_calls`, `response_format`, `service_tier`, `logprobs`, `top_logprobs` | `dimensions`, `encoding_format` |
//! | `completion_start_time` | the first chunk with content or a tool call (streams only) | – |
//! | `metadata` | `provider`, `response_id`, `finish_reasons`, `stream` | `provider` |
//! | `status`, `error` | `OK`; `ERROR` with the provider's message (keys masked), or with "dropped" for a stream dropped before its end | same |
//!
//! Left out on purpose: the request's `user` and `metadata` fields (identifiers of your users),
//! logprobs, audio output, embedding vectors, and the detail counts of usage (cached and
//! reasoning tokens). A streamed call records usage only if the request asked for it
//! (`stream_options.include_usage`): the wrapper never changes what you send.
//!
//! # Content capture
//!
//! Prompts and answers can hold personal data. [`TracedClient::capture_content`]`(false)`
//! leaves out `input` and `output` (messages, tool calls and their arguments, embedding input);
//! the model, parameters, usage, timing and errors are still recorded.
//!
//! [`in_scope`]: pandaprobe::Trace::in_scope
#![warn(missing_docs)]

mod chat;
mod client;
mod embeddings;
mod mapping;
mod options;
mod stream;

pub use chat::{TracedChat, CHAT_SPAN_NAME};
pub use client::{OpenAIExt, TracedClient};
pub use embeddings::{TracedEmbeddings, EMBEDDINGS_SPAN_NAME};
pub use options::DEFAULT_PROVIDER;
pub use stream::{TracedChatStream, MAX_ASSEMBLED_BYTES};
