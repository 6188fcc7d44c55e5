#!/usr/bin/env python3
"""Baseline benchmark: score() cost and delivery rate of the official PandaProbe Python SDK.

Uses only the SDK's documented public API:

    pandaprobe.init(api_key=..., project_name=..., endpoint=..., max_queue_size=...)
    pandaprobe.score(trace_id, name, value, data_type="NUMERIC")
    pandaprobe.flush(timeout=...)
    pandaprobe.shutdown()

Prints exactly one JSON object on stdout; every log line goes to stderr.

`delivered` is what the SDK itself can tell (N minus records it dropped on a full
queue or gave up on, counted from the SDK's own warning/error log records). The
SDK's flush() returns nothing, even on timeout, so the driver must compare with
the number of scores its server actually stored and overwrite `delivered` /
`delivered_per_s` with that.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
import uuid

# Keep stdout clean for the single JSON line: anything printed by the SDK or its
# dependencies goes to stderr.
_REAL_STDOUT = sys.stdout
sys.stdout = sys.stderr

log = logging.getLogger("bench_python_sdk")


class _SdkLogCounter(logging.Handler):
    """Counts the pandaprobe logger's warnings/errors, which is the only way the
    SDK reports drops and failures (its API never returns them)."""

    _ATTEMPT = re.compile(r"attempt (\d+)/(\d+)")

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.dropped_queue_full = 0
        self.retries = 0
        self.gave_up_after_retries = 0
        self.failed = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover - defensive
            return
        if "queue full" in msg:
            self.dropped_queue_full += 1
        elif "retrying in" in msg:
            self.retries += 1
            m = self._ATTEMPT.search(msg)
            # On the last attempt the SDK still logs "retrying", sleeps, then
            # gives up without another log line (attempt N+1 of N).
            if m and int(m.group(1)) > int(m.group(2)) and "connection error" not in msg:
                self.gave_up_after_retries += 1
        elif record.levelno >= logging.ERROR and "connection error after" not in msg:
            # "(not retrying)", unexpected status, or "transport error" (which
            # follows "connection error after N retries" for the same record).
            self.failed += 1


def _percentile(sorted_vals: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return 0
    rank = max(1, -(-len(sorted_vals) * q // 100))  # ceil(n*q/100)
    return sorted_vals[int(rank) - 1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--n", type=int, required=True, help="number of score() calls")
    p.add_argument("--trace-id", default=None, help="trace to score (default: a fresh uuid4)")
    p.add_argument(
        "--flush-timeout",
        type=float,
        default=None,
        help="seconds passed to pandaprobe.flush() (default: max(30, n/50))",
    )
    p.add_argument(
        "--create-trace",
        action="store_true",
        help="before timing, send one trace with --trace-id via the SDK (for a real "
        "server, which 500s scores of unknown traces); off by default",
    )
    p.add_argument("--trace-settle", type=float, default=1.0, help="seconds to wait after --create-trace")
    args = p.parse_args()

    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    log.setLevel(logging.INFO)

    n = args.n
    if n <= 0:
        p.error("--n must be positive")
    trace_id = args.trace_id or str(uuid.uuid4())
    uuid.UUID(trace_id)  # fail fast on a malformed id
    flush_timeout = args.flush_timeout if args.flush_timeout is not None else max(30.0, n / 50.0)

    # Queue must never fill during the measurement (the SDK drops the oldest
    # record on overflow): room for all N scores plus the flush sentinel, set
    # both through the env var and the init() argument (the argument wins).
    max_queue_size = max(1000, n + 64)
    os.environ["PANDAPROBE_MAX_QUEUE_SIZE"] = str(max_queue_size)
    # Nothing else may leak in from the caller's environment.
    for var in ("PANDAPROBE_ENVIRONMENT", "PANDAPROBE_RELEASE", "PANDAPROBE_DEBUG",
                "PANDAPROBE_BATCH_SIZE", "PANDAPROBE_FLUSH_INTERVAL"):
        os.environ.pop(var, None)

    import pandaprobe  # noqa: E402  (after env set-up)

    counter = _SdkLogCounter()
    logging.getLogger("pandaprobe").addHandler(counter)

    pandaprobe.init(
        api_key=args.api_key,
        project_name=args.project,
        endpoint=args.endpoint,
        enabled=True,
        max_queue_size=max_queue_size,
        # batch_size / flush_interval stay at the SDK defaults (10, 5.0 s): they
        # only group records on the worker thread, every score is still its own
        # POST, and flush() sends whatever is queued right away.
    )
    client = pandaprobe.get_client()
    cfg = client.config
    log.info(
        "pandaprobe %s endpoint=%s project=%s batch_size=%s flush_interval=%s max_queue_size=%s n=%d trace_id=%s",
        pandaprobe.__version__, cfg.endpoint, cfg.project_name, cfg.batch_size, cfg.flush_interval,
        cfg.max_queue_size, n, trace_id,
    )

    if args.create_trace:
        # Untimed set-up: store the trace the scores refer to (one POST /traces).
        # start_trace() cannot take a caller-chosen id (it ignores trace_id= and
        # always uses uuid4), so use the public Client.log_trace(TraceData).
        from datetime import datetime, timezone

        from pandaprobe.schemas import TraceData

        now = datetime.now(timezone.utc)
        client.log_trace(
            TraceData(
                trace_id=uuid.UUID(trace_id),
                name="bench-python-sdk",
                started_at=now,
                ended_at=now,
                input={"messages": [{"role": "user", "content": "bench"}]},
                output={"messages": [{"role": "assistant", "content": "ok"}]},
            )
        )
        pandaprobe.flush(timeout=30.0)
        time.sleep(args.trace_settle)

    score = pandaprobe.score
    perf = time.perf_counter_ns
    durations = [0] * n
    values = [f"{(i % 100) / 100:.2f}" for i in range(n)]  # valid NUMERIC in [0, 1]

    t_start = perf()
    for i in range(n):
        t0 = perf()
        score(trace_id, "bench", values[i], data_type="NUMERIC")
        durations[i] = perf() - t0
    t_enqueued = perf()
    pandaprobe.flush(timeout=flush_timeout)
    t_flushed = perf()

    # flush() returns None even when it timed out; ask the transport (private,
    # diagnostics only) whether the flush marker was actually reached.
    transport = getattr(client, "_transport", None)
    flush_event = getattr(transport, "_flush_event", None)
    flush_completed = bool(flush_event.is_set()) if flush_event is not None else None
    queue_left = None
    q = getattr(transport, "_queue", None)
    if q is not None:
        try:
            queue_left = q.qsize()
        except Exception:  # pragma: no cover
            pass

    pandaprobe.shutdown()

    durations.sort()
    seconds = (t_flushed - t_start) / 1e9
    lost = counter.dropped_queue_full + counter.gave_up_after_retries + counter.failed
    delivered = max(0, n - lost)
    if flush_completed is False:
        log.warning("flush() returned after its %.1fs timeout with records still queued", flush_timeout)

    result = {
        "sdk": "pandaprobe-python",
        "sdk_version": pandaprobe.__version__,
        "python_version": platform.python_version(),
        "n": n,
        "trace_id": trace_id,
        "score_ns_median": _percentile(durations, 50),
        "score_ns_p99": _percentile(durations, 99),
        "score_ns_mean": sum(durations) // n,
        "score_ns_max": durations[-1],
        "delivered": delivered,
        "delivered_source": "sdk_log_estimate",
        "seconds": round(seconds, 6),
        "delivered_per_s": round(delivered / seconds, 1) if seconds > 0 else None,
        "enqueue_seconds": round((t_enqueued - t_start) / 1e9, 6),
        "flush_call_seconds": round((t_flushed - t_enqueued) / 1e9, 6),
        "flush_return_seconds": round(seconds, 6),
        "flush_timeout_s": flush_timeout,
        "flush_completed": flush_completed,
        "queue_left_after_flush": queue_left,
        "dropped_queue_full": counter.dropped_queue_full,
        "retries": counter.retries,
        "failed": counter.failed + counter.gave_up_after_retries,
        "max_queue_size": cfg.max_queue_size,
        "batch_size": cfg.batch_size,
    }
    _REAL_STDOUT.write(json.dumps(result) + "\n")
    _REAL_STDOUT.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
