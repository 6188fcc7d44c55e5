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
//! | `token_usage` | `prompt_tokens`, `completion_tokens`, `total_tokens`; `cache_read_tokens` (`prompt_tokens_details.cached_tokens`) and `reasoning_tokens` (`completion_tokens_details.reasoning_tokens`) when reported, as the Python SDK records them | `prompt_tokens` |
//! | `model_parameters` | `temperature`, `top_p`, `max_tokens`, `max_completion_tokens`, `n`, `seed`, `stop`, penalties, `reasoning_effort`, `tool_choice`, `parallel_tool_calls`, `response_format`, `service_tier`, `logprobs`, `top_logprobs` | `dimensions`, `encoding_format` |
//! | `completion_start_time` | the first chunk with content or a tool call (streams only) | – |
//! | `metadata` | `provider`, `response_id`, `finish_reasons`, `stream` | `provider` |
//! | `status`, `error` | `OK`; `ERROR` with the provider's message (keys masked), or with "dropped" for a stream dropped before its end | same |
//!
//! Left out on purpose (chat completions): the request's `user` and `metadata` fields
//! (identifiers of your users), logprobs, audio output, embedding vectors, and the audio and
//! prediction token counts. A streamed call records usage only if the request asked for it
//! (`stream_options.include_usage`): the wrapper never changes what you send.
//!
//! # The Responses API
//!
//! With the feature `responses`, [`TracedClient::responses`] traces `create` and
//! `create_stream` as `openai-response` `LLM` spans (the Python SDK's name):
//!
//! - `input` is `{"messages": [...]}`: the instructions as a system message, a text input as a
//!   user message, input items as they are, with the declared `tools`.
//! - `output` is one assistant message: the output text as `content`, `refusal`, function
//!   calls as `tool_calls`, other items (reasoning, built-in tool calls) under `output_items`.
//! - Each built-in tool the provider ran (`web_search_call`, `file_search_call`,
//!   `code_interpreter_call`, `mcp_call`, ...) is also a `TOOL` child span named by its type,
//!   as in Python: the item's request fields as `input`, its `results`/`outputs`/`output` as
//!   `output`, `ERROR` when it failed. It carries the response's timing (the response does not
//!   say when the tool ran). Function calls get no span of their own: the application runs them.
//! - Usage is `input_tokens`/`output_tokens` as prompt/completion tokens, with
//!   `input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens` as
//!   `cache_read_tokens` and `reasoning_tokens`.
//! - Parameters are `temperature`, `top_p`, `max_output_tokens`, `max_tool_calls`,
//!   `parallel_tool_calls`, `reasoning`, `service_tier`, `text`, `tool_choice`, `truncation`,
//!   `top_logprobs`, `background` (never `user`, `metadata`, `safety_identifier` or
//!   `prompt_cache_key`).
//! - A stream records the time of its first delta and the whole response of its last event; a
//!   `failed` or `incomplete` response, an error event, a cut or a drop ends the span as
//!   `ERROR` with the text received so far.
//!
//! # Content capture
//!
//! Prompts and answers can hold personal data. [`TracedClient::capture_content`]`(false)`
//! leaves out `input` and `output` (messages, tool calls and their arguments, embedding input);
//! the model, parameters, usage, timing and errors are still recorded.
//!
//! [`in_scope`]: pandaprobe::Trace::in_scope
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod chat;
mod client;
mod embeddings;
mod mapping;
mod options;
#[cfg(feature = "responses")]
mod responses;
mod stream;

pub use chat::{TracedChat, CHAT_SPAN_NAME};
pub use client::{OpenAIExt, TracedClient};
pub use embeddings::{TracedEmbeddings, EMBEDDINGS_SPAN_NAME};
pub use options::DEFAULT_PROVIDER;
#[cfg(feature = "responses")]
#[cfg_attr(docsrs, doc(cfg(feature = "responses")))]
pub use responses::{TracedResponseStream, TracedResponses, RESPONSES_SPAN_NAME};
pub use stream::{TracedChatStream, MAX_ASSEMBLED_BYTES};
