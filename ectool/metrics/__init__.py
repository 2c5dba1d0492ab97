"""Metrics from the store: the same numbers after any restart, because they are computed
from the Call rows (the source of truth) rather than counted from events.

Per socket over a window: calls in (submitted) and out (finished) and their rates per
minute, latency percentiles (finished - started of the last attempt), queue wait (started -
submitted), failure rate, and right now: queued, retrying, in flight (running) and the
broker queue's depth. Per-minute series (for sparklines) are bucketed in SQL. Per worker
and host: cpu and memory of local processes (psutil); other hosts report theirs in
``worker.heartbeat`` events.

History: :func:`rollup` folds every complete minute into :class:`MinuteStat` rows (per
socket: counts, exact percentiles of the minute, mergeable latency histograms), once a
minute from the agent and before each ``ec stats``; :func:`prune` drops them after
``stats_retention``. A window is then read from the rollups for the whole minutes they
cover and from the Call rows for the rest (the partial minute after ``--since``, the minutes
not rolled up yet, anything older than the rollups), so counts stay exact and history
outlives the Call rows. Correctness never depends on the rollups being current, only speed.

Modules: :mod:`.histogram` (pure figures), :mod:`.sql` (dialect), :mod:`.rollups` (the
writer), :mod:`.queries` (window readers), :mod:`.usage` (psutil). This package exports
their public names.
"""

from __future__ import annotations

from ..store.models import now
from .histogram import (
    BUCKETS_PER_OCTAVE,
    COUNTS,
    MIN_MS,
    MINUTE,
    TOTAL,
    bucket,
    bucket_count,
    bucket_value,
    ceil_minute,
    decode_histogram,
    encode_histogram,
    epoch,
    fill,
    floor_minute,
    hist_percentile,
    histogram,
    merge,
    per_minute,
    percentile,
    ratio,
    spark,
    split,
    summarize,
    total,
)
from .queries import (
    SAMPLE,
    minute_series,
    queue_depth,
    series,
    socket_stats,
    stats,
    status_counts,
    window,
    worker_calls,
    worker_stats,
)
from .rollups import CHUNK, REPAIR, SETTLE, compute, maintain, prune, rolled_up, rollup
from .usage import HOST, Usage

__all__ = [
    "BUCKETS_PER_OCTAVE", "CHUNK", "COUNTS", "HOST", "MINUTE", "MIN_MS", "REPAIR", "SAMPLE", "SETTLE", "TOTAL",
    "Usage", "bucket", "bucket_count", "bucket_value", "ceil_minute", "compute", "decode_histogram",
    "encode_histogram", "epoch", "fill", "floor_minute", "hist_percentile", "histogram", "maintain", "merge",
    "minute_series", "now", "per_minute", "percentile", "prune", "queue_depth", "ratio", "rolled_up", "rollup",
    "series", "socket_stats", "spark", "split", "stats", "status_counts", "summarize", "total", "window",
    "worker_calls", "worker_stats",
]
