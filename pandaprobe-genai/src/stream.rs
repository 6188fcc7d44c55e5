//! A streamed chat answer that records itself: the time of the first chunk, the answer
//! assembled from the chunks, the usage of the end event, and how the stream ended.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use genai::chat::{ChatOptions, ChatStream, ChatStreamEvent, MessageContent, StreamEnd, ToolCall};
use genai::ModelIden;
use pandaprobe::{Span, SpanStatus};
use serde_json::{json, Value};

use crate::mapping::{assistant_like, error_text, metadata, model_and_provider, record_usage};

/// The most text the span keeps of a streamed answer (text and reasoning together). The caller
/// still gets every event; only the recorded copy stops growing, and the span's metadata says
/// `"output_truncated": true`.
pub const MAX_ASSEMBLED_BYTES: usize = 4 << 20;

/// The options a traced stream is sent with: the caller's, with the usage captured (else genai
/// drops the token counts of a stream) and, when content is recorded, whole tool calls.
pub(crate) fn stream_options(options: Option<&ChatOptions>, capture_content: bool) -> ChatOptions {
    let mut options = options.cloned().unwrap_or_default();
    options.capture_usage = Some(true);
    if capture_content {
        options.capture_tool_calls = Some(true);
    }
    options
}

/// The stream [`TracedClient::exec_chat_stream`](crate::TracedClient::exec_chat_stream)
/// returns: genai's events, unchanged, with the span ended when the stream ends, fails or is
/// dropped.
pub struct TracedChatStream {
    inner: ChatStream,
    model_iden: ModelIden,
    span: Option<Span>,
    capture_content: bool,
    answer: Assembly,
}

impl std::fmt::Debug for TracedChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedChatStream")
            .field("model", &self.model_iden.model_name)
            .field("chunks", &self.answer.chunks)
            .field("ended", &self.span.is_none())
            .finish_non_exhaustive()
    }
}

impl TracedChatStream {
    pub(crate) fn new(
        inner: ChatStream,
        span: Span,
        model_iden: ModelIden,
        capture_content: bool,
    ) -> Self {
        TracedChatStream {
            inner,
            model_iden,
            span: Some(span),
            capture_content,
            answer: Assembly::default(),
        }
    }

    /// The model and adapter genai resolved for this stream.
    pub fn model_iden(&self) -> &ModelIden {
        &self.model_iden
    }

    fn end(&mut self, end: Option<&StreamEnd>, error: Option<String>) {
        let Some(span) = self.span.take() else {
            return;
        };
        let answer = std::mem::take(&mut self.answer);
        let (model, provider) = model_and_provider(&self.model_iden);
        span.set_model(model);
        if let Some(usage) = end.and_then(|e| e.captured_usage.as_ref()) {
            record_usage(&span, usage);
        }
        let finish_reason = end
            .and_then(|e| e.captured_stop_reason.as_ref())
            .map_or(Value::Null, |r| r.raw().into());
        let response_id = end
            .and_then(|e| e.captured_response_id.clone())
            .map_or(Value::Null, Value::String);
        span.set_metadata(metadata(
            Some(provider),
            [
                ("stream", Value::Bool(true)),
                ("response_id", response_id),
                ("finish_reason", finish_reason),
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
        if self.capture_content {
            let calls = end.and_then(StreamEnd::captured_tool_calls);
            if let Some(output) = answer.into_output(calls) {
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
    type Item = genai::Result<ChatStreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(ChatStreamEvent::End(end)))) => this.end(Some(end), None),
            Poll::Ready(Some(Ok(event))) => {
                if let Some(span) = &this.span {
                    if this.answer.add(event, this.capture_content) {
                        span.set_completion_start();
                    }
                }
            }
            Poll::Ready(Some(Err(error))) => {
                let text = error_text(error);
                let chunks = this.answer.chunks;
                this.end(
                    None,
                    Some(format!("stream failed after {chunks} chunks: {text}")),
                );
            }
            Poll::Ready(None) => {
                // A stream that stops without its end event was cut: what arrived is kept,
                // and the span says the answer is not whole.
                let chunks = this.answer.chunks;
                this.end(
                    None,
                    Some(format!(
                        "stream ended without its end event, after {chunks} chunks"
                    )),
                );
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for TracedChatStream {
    fn drop(&mut self) {
        if self.span.is_some() {
            let chunks = self.answer.chunks;
            self.end(
                None,
                Some(format!(
                    "stream dropped before its end, after {chunks} chunks"
                )),
            );
        }
    }
}

/// The answer so far.
#[derive(Default)]
struct Assembly {
    chunks: u64,
    text: String,
    reasoning: String,
    tool_calls: Vec<ToolCall>,
    truncated: bool,
}

impl Assembly {
    /// Takes in one event; `true` when it is the first that carries any of the answer.
    fn add(&mut self, event: &ChatStreamEvent, keep: bool) -> bool {
        let first = self.chunks == 0;
        match event {
            ChatStreamEvent::Chunk(chunk) => {
                if keep {
                    self.push_text(&chunk.content, false);
                }
            }
            ChatStreamEvent::ReasoningChunk(chunk) => {
                if keep {
                    self.push_text(&chunk.content, true);
                }
            }
            ChatStreamEvent::ToolCallChunk(chunk) => {
                if keep {
                    self.push_tool_call(&chunk.tool_call);
                }
            }
            _ => return false,
        }
        self.chunks += 1;
        first
    }

    fn push_text(&mut self, text: &str, reasoning: bool) {
        let room = MAX_ASSEMBLED_BYTES.saturating_sub(self.text.len() + self.reasoning.len());
        let target = if reasoning {
            &mut self.reasoning
        } else {
            &mut self.text
        };
        if text.len() <= room {
            target.push_str(text);
            return;
        }
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        target.push_str(&text[..cut]);
        self.truncated = true;
    }

    /// The latest state of each call: genai's chunks carry the call so far when
    /// `capture_tool_calls` is on, and each chunk is a whole call for most adapters.
    fn push_tool_call(&mut self, call: &ToolCall) {
        match self
            .tool_calls
            .iter_mut()
            .find(|c| c.call_id == call.call_id)
        {
            Some(known) => *known = call.clone(),
            None => self.tool_calls.push(call.clone()),
        }
    }

    /// The assistant message: the text and reasoning assembled here, the tool calls of the end
    /// event when it has them (genai parsed their arguments), else those seen in the chunks.
    fn into_output(self, end_calls: Option<Vec<&ToolCall>>) -> Option<Value> {
        let calls: Vec<ToolCall> = match end_calls {
            Some(calls) if !calls.is_empty() => calls.into_iter().cloned().collect(),
            _ => self.tool_calls,
        };
        if self.text.is_empty() && self.reasoning.is_empty() && calls.is_empty() {
            return None;
        }
        let mut content = MessageContent::from_tool_calls(calls);
        if !self.text.is_empty() {
            content.prepend(self.text);
        }
        let reasoning = (!self.reasoning.is_empty()).then_some(self.reasoning.as_str());
        Some(assistant_like("assistant", &content, reasoning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genai::chat::StreamChunk;

    fn chunk(text: &str) -> ChatStreamEvent {
        ChatStreamEvent::Chunk(StreamChunk {
            content: text.to_owned(),
        })
    }

    #[test]
    fn the_first_answer_chunk_is_marked_and_start_events_are_not() {
        let mut answer = Assembly::default();
        assert!(!answer.add(&ChatStreamEvent::Start, true));
        assert!(answer.add(&chunk("Hel"), true));
        assert!(!answer.add(&chunk("lo"), true));
        assert_eq!(answer.chunks, 2);
        assert_eq!(
            answer.into_output(None),
            Some(json!({"role": "assistant", "content": "Hello"}))
        );
    }

    #[test]
    fn the_recorded_copy_stops_at_the_bound_on_a_char_boundary() {
        let mut answer = Assembly::default();
        answer.push_text(&"a".repeat(MAX_ASSEMBLED_BYTES - 1), false);
        answer.push_text("é", false);
        assert!(answer.truncated);
        assert_eq!(answer.text.len(), MAX_ASSEMBLED_BYTES - 1);
    }

    #[test]
    fn without_capture_nothing_is_kept_but_chunks_are_counted() {
        let mut answer = Assembly::default();
        assert!(answer.add(&chunk("secret"), false));
        assert_eq!(answer.chunks, 1);
        assert_eq!(answer.into_output(None), None);
    }

    #[test]
    fn streams_ask_for_usage_and_whole_tool_calls_only_with_capture() {
        let with = stream_options(Some(&ChatOptions::default().with_temperature(0.5)), true);
        assert_eq!(with.capture_usage, Some(true));
        assert_eq!(with.capture_tool_calls, Some(true));
        assert_eq!(with.temperature, Some(0.5));
        let without = stream_options(None, false);
        assert_eq!(without.capture_usage, Some(true));
        assert_eq!(without.capture_tool_calls, None);
    }
}
