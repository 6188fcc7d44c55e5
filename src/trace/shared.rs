//! What a trace's handles and spans share: the trace's data until it ends, and the guard
//! that ends it when the last handle goes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use uuid::Uuid;

use super::sanitize;
use crate::budget::Charge;
use crate::producer::Producer;
use crate::score::Score;
use crate::trace_data::{EndedTrace, SpanData, TraceData, TraceStatus};

/// A trace until it ends.
pub(super) struct OpenTrace {
    pub(super) data: TraceData,
    /// Scores made through the trace, validated, counted and charged, sent after it.
    pub(super) scores: Vec<(Score, Charge)>,
}

/// What a trace's handles and spans share. They hold the queue's producer side, not a
/// [`Client`](crate::Client): a trace or a span never keeps the worker alive, and dropping one
/// never runs a shutdown (which blocks). A trace that ends after the last client handle went
/// is refused as shut down, counted and handed to the drop hook like any refused record.
pub(crate) struct TraceShared {
    /// `None` for a disabled client.
    pub(super) producer: Option<Producer>,
    pub(super) trace_id: Uuid,
    /// `None` once the trace has ended.
    pub(super) open: Mutex<Option<OpenTrace>>,
}

impl TraceShared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<OpenTrace>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn trace_id(&self) -> Uuid {
        self.trace_id
    }

    /// Runs `f` on the trace's data while it is open; does nothing after it ended.
    pub(crate) fn update(&self, f: impl FnOnce(&mut TraceData)) {
        if let Some(open) = &mut *self.lock() {
            f(&mut open.data);
        }
    }

    /// Adds a span unless the trace has ended; returns its position.
    pub(crate) fn add_span(&self, span: SpanData) -> Option<usize> {
        let mut guard = self.lock();
        let open = guard.as_mut()?;
        open.data.spans.push(span);
        Some(open.data.spans.len() - 1)
    }

    /// Ends the trace once: open spans end with it, NUL characters are replaced, and one
    /// record is queued. A trace ended by a panic is marked [`TraceStatus::Error`].
    pub(super) fn end(&self, panicking: bool) {
        let Some(mut open) = self.lock().take() else {
            return;
        };
        let now = SystemTime::now();
        let data = &mut open.data;
        data.ended_at.get_or_insert(now);
        if panicking {
            data.status = TraceStatus::Error;
        }
        for span in &mut data.spans {
            span.ended_at.get_or_insert(now);
        }
        let nul_replaced = sanitize::replace_nul(data);
        if let Some(producer) = &self.producer {
            producer.trace_ended(
                EndedTrace {
                    data: open.data,
                    scores: open.scores,
                },
                nul_replaced,
            );
        }
    }
}

/// Ends the trace when the last [`Trace`] handle goes. Spans hold the shared state, not this,
/// so an open span never keeps its trace from ending.
pub(super) struct EndOnDrop(pub(super) Arc<TraceShared>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end(std::thread::panicking());
    }
}
