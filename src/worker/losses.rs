//! Where every loss is seen: each drop is counted, handed to the user's hook, and logged at
//! most once per reason every ten seconds, with the count and one example (trace id, name,
//! status, the server's message). Losses counted on the callers' side (a full queue, NUL
//! characters replaced, fields cut) are logged here too, from their counters.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::log_limiter::LogLimiter;
use crate::drop_event::{DropEvent, DropReason};
use crate::protocol::Shared;

/// How often a repeated warning is logged at most, with a count.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) struct Losses {
    shared: Arc<Shared>,
    limiter: LogLimiter,
    /// Caller-side counters as last logged: queue full, NUL replaced, out of bytes, cut.
    logged: [u64; 4],
}

impl Losses {
    pub(crate) fn new(shared: Arc<Shared>) -> Losses {
        Losses {
            shared,
            limiter: LogLimiter::new(LOG_INTERVAL),
            logged: [0; 4],
        }
    }

    /// Counts and logs the spans of one request that adds them to a trace, dropped. They are
    /// part of a trace record that was delivered, so they have no drop event of their own:
    /// [`Stats::spans_dropped`](crate::Stats::spans_dropped) counts them.
    pub(crate) fn spans_dropped(&mut self, event: &DropEvent, spans: usize, now: Instant) {
        self.shared.counters.spans_dropped(spans as u64);
        if let Some(also) = self.limiter.admit("spans", now) {
            let trace_id = event.trace_id();
            tracing::warn!(
                target: "pandaprobe", %trace_id,
                "{spans} span(s) past the trace's first 500 were dropped (and {also} more \
                 requests since the last report): {event}"
            );
        }
    }

    /// Counts, hooks and logs one drop.
    pub(crate) fn dropped(&mut self, event: &DropEvent, now: Instant) {
        self.shared
            .counters
            .dropped(event.kind(), event.reason(), 1);
        if !self.shared.call_hook(event) && self.limiter.admit("hook", now).is_some() {
            tracing::error!(
                target: "pandaprobe",
                "the on_drop hook panicked (caught; the worker goes on) for: {event}"
            );
        }
        let auth = matches!(event.status(), Some(401 | 403));
        let key = if auth {
            "auth"
        } else {
            event.reason().as_str()
        };
        let Some(also) = self.limiter.admit(key, now) else {
            return;
        };
        let more = if also > 0 {
            format!(" (and {also} more since the last report)")
        } else {
            String::new()
        };
        let trace_id = event.trace_id();
        let name = event.name();
        match event.reason() {
            _ if auth => tracing::error!(
                target: "pandaprobe", %trace_id, name,
                "the server refused the credentials; check PANDAPROBE_API_KEY (the key) and \
                 PANDAPROBE_PROJECT_NAME (the project): {event}{more}"
            ),
            DropReason::QuotaExceeded => tracing::error!(
                target: "pandaprobe", %trace_id, name,
                "the account's trace quota is used up; records are dropped until it resets \
                 or the plan changes: {event}{more}"
            ),
            DropReason::WorkerFailed => tracing::error!(
                target: "pandaprobe", %trace_id, name, "{event}{more}"
            ),
            _ => tracing::warn!(target: "pandaprobe", %trace_id, name, "{event}{more}"),
        }
    }

    /// Logs what the callers' side counted since the last report: records refused because the
    /// queue was full, NUL characters replaced in traces, fields cut. `force` logs
    /// regardless of the interval (at shutdown).
    pub(crate) fn report_counters(&mut self, now: Instant, force: bool) {
        let stats = self.shared.counters.snapshot();
        let totals = [
            self.shared.counters.queue_full_total(),
            stats.nul_replaced,
            stats.scores.dropped.queue_bytes_full + stats.traces.dropped.queue_bytes_full,
            stats.fields_cut,
        ];
        let keys = [
            "queue_full",
            "nul_replaced",
            "queue_bytes_full",
            "fields_cut",
        ];
        for i in 0..totals.len() {
            let new = totals[i].saturating_sub(self.logged[i]);
            if new == 0 || !(force || self.limiter.admit(keys[i], now).is_some()) {
                continue;
            }
            self.logged[i] = totals[i];
            let max_queue_size = self.shared.config.max_queue_size;
            match i {
                0 => tracing::warn!(
                    target: "pandaprobe",
                    "dropped {new} record(s) because the queue was full (max_queue_size = \
                     {max_queue_size}); raise it, or lower the scoring rate"
                ),
                1 => tracing::warn!(
                    target: "pandaprobe",
                    "replaced {new} NUL character(s) in traces with U+FFFD: the server cannot \
                     store them, and would silently lose the whole trace"
                ),
                2 => tracing::warn!(
                    target: "pandaprobe",
                    "dropped {new} record(s) because the byte budget was full \
                     (max_queue_bytes = {}, {} held now); the server is slow or away, or \
                     records are larger than the budget allows",
                    self.shared.budget.limit(),
                    self.shared.budget.used()
                ),
                _ => tracing::warn!(
                    target: "pandaprobe",
                    "cut {new} field(s) of records over max_record_bytes ({}) to a marker",
                    self.shared.config.max_record_bytes
                ),
            }
        }
    }
}
