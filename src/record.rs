//! What travels through the queue from the callers to the worker.

use uuid::Uuid;

use crate::budget::Charge;
use crate::drop_event::RecordKind;
use crate::score::Score;
use crate::trace_data::EndedTrace;

/// One queued record, with what it is charged to the byte budget. Kept small: a score is
/// about a hundred bytes, a trace is boxed.
pub(crate) enum Record {
    /// A validated score.
    Score(Score, Charge),
    /// An ended trace with its spans; the scores made through it carry charges of their own.
    Trace(Box<EndedTrace>, Charge),
}

impl Record {
    pub(crate) fn kind(&self) -> RecordKind {
        match self {
            Record::Score(..) => RecordKind::Score,
            Record::Trace(..) => RecordKind::Trace,
        }
    }
}

/// What the worker should know of traces before they end, on a channel of its own: a score
/// for a trace still open in this process waits for it rather than meeting a 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A trace was opened.
    Opened(Uuid),
    /// It ended but could not be queued: nothing should wait for it.
    Abandoned(Uuid),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_score_is_small() {
        // The queue reserves max_queue_size slots of this size up front.
        let size = std::mem::size_of::<Record>();
        assert!(size <= 120, "{size}");
    }
}
