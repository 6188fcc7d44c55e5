//! A streamed chat completion that records itself: the time of the first token, the answer
//! assembled from its chunks, and how it ended.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::error::OpenAIError;
use async_openai::types::chat::{ChatCompletionResponseStream, CreateChatCompletionStreamResponse};
use futures_core::Stream;
use pandaprobe::{Span, SpanStatus};
use serde_json::{json, Map, Value};

use crate::mapping::{chat_output, metadata, record_usage};
use crate::options::Options;

/// The most text the span keeps of a streamed answer (all choices together). The caller still
/// gets every chunk; only the recorded copy stops growing, and the span's metadata says
/// `"output_truncated": true`.
pub const MAX_ASSEMBLED_BYTES: usize = 4 << 20;

/// The stream [`TracedChat::create_stream`](crate::TracedChat::create_stream) returns: the
/// chunks of `async_openai`'s stream, unchanged, with the span ended when the stream ends, fails
/// or is dropped.
pub struct TracedChatStream {
    inner: ChatCompletionResponseStream,
    span: Option<Span>,
    options: Options,
    answer: Assembly,
}

impl std::fmt::Debug for TracedChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedChatStream")
            .field("chunks", &self.answer.chunks)
            .field("ended", &self.span.is_none())
            .finish_non_exhaustive()
    }
}

impl TracedChatStream {
    pub(crate) fn new(inner: ChatCompletionResponseStream, span: Span, options: Options) -> Self {
        TracedChatStream {
            inner,
            span: Some(span),
            options,
            answer: Assembly::default(),
        }
    }

    fn end(&mut self, error: Option<String>) {
        let Some(span) = self.span.take() else {
            return;
        };
        let answer = std::mem::take(&mut self.answer);
        if let Some(model) = answer.model.clone().filter(|m| !m.is_empty()) {
            span.set_model(model);
        }
        if let Some(usage) = &answer.usage {
            record_usage(&span, usage);
        }
        span.set_metadata(metadata(
            &self.options.provider,
            [
                ("stream", Value::Bool(true)),
                (
                    "response_id",
                    answer.id.clone().map_or(Value::Null, Value::String),
                ),
                ("finish_reasons", Value::Array(answer.finish_reasons())),
                ("chunks", json!(answer.chunks)),
                (
                    "output_truncated",
                    if answer.truncated {
                        Value::Bool(true)
                    } else {
                        Value::Null
                    },
                ),
            ],
        ));
        if self.options.capture_content {
            if let Some(output) = chat_output(answer.into_messages()) {
                span.set_output(output);
            }
        }
        match error {
            Some(error) => span.set_error(error),
            None => span.set_status(SpanStatus::Ok),
        }
    }
}

impl Stream for TracedChatStream {
    type Item = Result<CreateChatCompletionStreamResponse, OpenAIError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(span) = &this.span {
                    if this.answer.add(chunk, this.options.capture_content) {
                        span.set_completion_start();
                    }
                }
            }
            Poll::Ready(Some(Err(error))) => {
                let text = error.to_string();
                this.end(Some(format!(
                    "stream failed after {} chunks: {text}",
                    this.answer.chunks
                )));
            }
            Poll::Ready(None) => this.end(None),
            Poll::Pending => {}
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl Drop for TracedChatStream {
    fn drop(&mut self) {
        if self.span.is_some() {
            let chunks = self.answer.chunks;
            self.end(Some(format!(
                "stream dropped before its end, after {chunks} chunks"
            )));
        }
    }
}

/// The answer so far, per choice.
#[derive(Default)]
struct Assembly {
    chunks: u64,
    first_token_seen: bool,
    id: Option<String>,
    model: Option<String>,
    usage: Option<async_openai::types::chat::CompletionUsage>,
    choices: BTreeMap<u32, Choice>,
    bytes: usize,
    truncated: bool,
}

#[derive(Default)]
struct Choice {
    role: Option<Value>,
    content: String,
    refusal: String,
    tool_calls: BTreeMap<u32, ToolCall>,
    finish_reason: Option<Value>,
}

#[derive(Default)]
struct ToolCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

impl Assembly {
    /// Adds a chunk; true when it is the first to carry a token (content, a refusal or a tool
    /// call). The role-only chunk a stream opens with is not a token.
    fn add(&mut self, chunk: &CreateChatCompletionStreamResponse, capture: bool) -> bool {
        self.chunks += 1;
        if self.id.is_none() && !chunk.id.is_empty() {
            self.id = Some(chunk.id.clone());
        }
        if self.model.is_none() && !chunk.model.is_empty() {
            self.model = Some(chunk.model.clone());
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        let mut token = false;
        for choice in &chunk.choices {
            let delta = &choice.delta;
            token |= delta.content.as_deref().is_some_and(|c| !c.is_empty())
                || delta.refusal.as_deref().is_some_and(|r| !r.is_empty())
                || delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty());
            let slot = self.choices.entry(choice.index).or_default();
            if let Some(reason) = &choice.finish_reason {
                slot.finish_reason = serde_json::to_value(reason).ok();
            }
            if !capture {
                continue;
            }
            if let Some(role) = &delta.role {
                slot.role = serde_json::to_value(role).ok();
            }
            let budget = &mut Budget {
                used: &mut self.bytes,
                truncated: &mut self.truncated,
            };
            if let Some(text) = &delta.content {
                budget.append(&mut slot.content, text);
            }
            if let Some(text) = &delta.refusal {
                budget.append(&mut slot.refusal, text);
            }
            for call in delta.tool_calls.iter().flatten() {
                let entry = slot.tool_calls.entry(call.index).or_default();
                if let Some(id) = &call.id {
                    entry.id = Some(id.clone());
                }
                if let Some(function) = &call.function {
                    if let Some(name) = &function.name {
                        budget.append(&mut entry.name, name);
                    }
                    if let Some(arguments) = &function.arguments {
                        budget.append(&mut entry.arguments, arguments);
                    }
                }
            }
        }
        let first = token && !self.first_token_seen;
        self.first_token_seen |= token;
        first
    }

    fn finish_reasons(&self) -> Vec<Value> {
        self.choices
            .values()
            .filter_map(|c| c.finish_reason.clone())
            .collect()
    }

    /// Each choice as the assistant message a plain call would have returned.
    fn into_messages(self) -> Vec<Value> {
        self.choices
            .into_values()
            .map(|choice| {
                let mut message = Map::new();
                message.insert(
                    "role".to_owned(),
                    choice.role.unwrap_or_else(|| json!("assistant")),
                );
                if !choice.content.is_empty() {
                    message.insert("content".to_owned(), Value::String(choice.content));
                }
                if !choice.refusal.is_empty() {
                    message.insert("refusal".to_owned(), Value::String(choice.refusal));
                }
                if !choice.tool_calls.is_empty() {
                    let calls = choice
                        .tool_calls
                        .into_values()
                        .map(|call| {
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": call.arguments},
                            })
                        })
                        .collect();
                    message.insert("tool_calls".to_owned(), Value::Array(calls));
                }
                Value::Object(message)
            })
            .collect()
    }
}

/// The assembled text's share of [`MAX_ASSEMBLED_BYTES`].
struct Budget<'a> {
    used: &'a mut usize,
    truncated: &'a mut bool,
}

impl Budget<'_> {
    fn append(&mut self, to: &mut String, text: &str) {
        let room = MAX_ASSEMBLED_BYTES.saturating_sub(*self.used);
        if text.len() <= room {
            to.push_str(text);
            *self.used += text.len();
            return;
        }
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        to.push_str(&text[..cut]);
        *self.used += cut;
        *self.truncated = true;
    }
}
