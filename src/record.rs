//! What travels through the queue from the callers to the worker.

use uuid::Uuid;

use crate::score::Score;
use crate::stats::Kind;

/// One queued record. Kept small: a score is about a hundred bytes, a trace is boxed.
pub(crate) enum Record {
    /// A validated score.
    Score(Score),
    /// An ended trace with its spans, and the scores made through it.
    Trace(Box<TraceRecord>),
}

impl Record {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Record::Score(_) => Kind::Score,
            Record::Trace(_) => Kind::Trace,
        }
    }
}

/// An ended trace, serialized, with the scores made through [`Trace::score`](crate::Trace::score)
/// that wait for it: the server accepts a score only once its trace is stored.
pub(crate) struct TraceRecord {
    pub(crate) trace_id: Uuid,
    pub(crate) body: Vec<u8>,
    /// Validated scores, already counted as accepted.
    pub(crate) scores: Vec<Score>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_score_is_small() {
        // The queue reserves max_queue_size slots of this size up front.
        assert!(
            std::mem::size_of::<Record>() <= 104,
            "{}",
            std::mem::size_of::<Record>()
        );
    }
}
