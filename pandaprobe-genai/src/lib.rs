//! Traces [`genai`](https://docs.rs/genai) calls into PandaProbe: every chat call (plain or
//! streamed) and every embeddings call, to any provider genai reaches (OpenAI, Anthropic,
//! Gemini, Ollama, Groq, DeepSeek, ...), becomes an `LLM` or `EMBEDDING` span with the
//! provider and model, the messages, the output (tool calls included), token usage, model
//! parameters and, when streaming, the time of the first chunk.
//!
//! Wrap the `genai::Client` once with [`GenaiExt::traced`] and call it as before: the traced
//! client has genai's method names and signatures. Each call joins the current trace (a
//! [`pandaprobe::Trace`] entered or [`in_scope`], or the nearest `tracing` span the
//! `TracingLayer` records) and opens a trace of its own otherwise.
//!
//! ```no_run
//! use genai::chat::{ChatMessage, ChatRequest};
//! use pandaprobe_genai::GenaiExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let probe = pandaprobe::Client::from_env()?;
//! let genai = genai::Client::new()?.traced(&probe);
//!
//! let request = ChatRequest::new(vec![ChatMessage::user("Say hi")]);
//! let answer = genai.exec_chat("claude-haiku-4-5", request, None).await?;
//! # let _ = answer;
//! probe.flush(std::time::Duration::from_secs(5))?;
//! # Ok(()) }
//! ```
//!
//! # What a span holds
//!
//! Messages are written in the OpenAI chat shape whatever the provider, as PandaProbe's UI
//! renders them.
//!
//! | span field | chat | embeddings |
//! |---|---|---|
//! | `name`, `kind` | `genai-chat`, `LLM` | `genai-embed`, `EMBEDDING` |
//! | `model` | the model the provider reports (the requested one if the call failed) | same |
//! | `input` | `{"messages": [...], "tools": [...]}`: the system prompt first, tool responses as `tool` messages, images and files by type, name and URL (never their bytes) | `{"input": ...}` |
//! | `output` | the assistant message (`role`, `content`, `tool_calls`, `reasoning_content`) | `{"embeddings": n, "dimensions": d}`, never the vectors |
//! | `token_usage` | `prompt_tokens`, `completion_tokens`, `total_tokens`; `cache_read_tokens`, `cache_creation_tokens` and `reasoning_tokens` from genai's usage details when the provider reports them | `prompt_tokens` |
//! | `model_parameters` | the `ChatOptions` set among `temperature`, `max_tokens`, `top_p`, `stop_sequences`, `seed`, `reasoning_effort`, `verbosity`, `service_tier`, `response_format`, `tool_choice` | `dimensions`, `encoding_format`, `embedding_type` |
//! | `completion_start_time` | the first text, reasoning or tool-call chunk (streams only) | – |
//! | `metadata` | `provider` (genai's adapter: `openai`, `anthropic`, `gemini`, ...), `stream`, `response_id`, `finish_reason`; for streams `chunks` and `output_truncated` | `provider` |
//! | `status`, `error` | `OK`; `ERROR` with genai's message (keys masked, no request payload), "dropped" for a stream dropped before its end, "without its end event" for one cut short | same |
//!
//! Left out on purpose: `ChatOptions`' `extra_headers`, `extra_body` and `prompt_cache_key`
//! (they can carry keys and user identifiers), thought signatures, the bytes of images and
//! files, embedding vectors, and the audio and prediction token counts.
//! Options set on the `genai::Client` itself (its default `ChatOptions`) are applied by genai
//! but not recorded: genai does not expose them.
//!
//! A traced stream is sent with `capture_usage` on (and `capture_tool_calls` when content is
//! recorded), so that its end event carries the token counts: the one change the wrapper makes
//! to what you send.
//!
//! Do not turn on genai's own `otel` feature together with the `TracingLayer`: genai's `chat`
//! spans would then be recorded a second time, through the layer's GenAI-conventions mapping.
//!
//! # Content capture
//!
//! Prompts and answers can hold personal data. [`TracedClient::capture_content`]`(false)`
//! leaves out `input` and `output` (messages, tool calls and their arguments, embedding
//! input); the model, provider, parameters, usage, timing and errors are still recorded.
//!
//! [`in_scope`]: pandaprobe::Trace::in_scope
#![warn(missing_docs)]

mod client;
mod mapping;
mod stream;

pub use client::{GenaiExt, TracedClient, CHAT_SPAN_NAME, EMBED_SPAN_NAME};
pub use stream::{TracedChatStream, MAX_ASSEMBLED_BYTES};
