"""Pure figures of the metrics: percentiles, mergeable latency histograms, minute
arithmetic, rollup rows and sparklines. No store, no clock."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

MINUTE = dt.timedelta(minutes=1)
#: latency histogram resolution: buckets per doubling (each ~4.4% wide, so +-2.2%)
BUCKETS_PER_OCTAVE = 16
#: run times and waits below this many milliseconds share the lowest bucket
MIN_MS = 0.001
#: the socket of a minute's totals row, which also marks the minute as rolled up
TOTAL = ""
#: what a rollup row counts besides latencies (``out`` is the last four)
COUNTS = ("submitted", "done", "failed", "dead", "cancelled", "retried", "timed")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of sorted ``values``, interpolating linearly between
    the closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = (len(values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def bucket_count(seconds: float, width: float) -> int:
    """How many buckets of ``width`` seconds cover a window of ``seconds`` (at least one)."""
    return max(1, math.ceil(seconds / width - 1e-9))


def fill(counts: dict[int, int], n: int) -> list[int]:
    """A dense list of ``n`` bucket counts from a sparse {bucket index: count} map."""
    return [counts.get(i, 0) for i in range(n)]


def per_minute(count: int, seconds: float) -> float:
    """``count`` events over ``seconds``, as a rate per minute."""
    return round(count * 60.0 / seconds, 2) if seconds > 0 else 0.0


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def epoch(when: dt.datetime) -> float:
    """Seconds since the epoch of a stored (naive UTC) timestamp."""
    return when.replace(tzinfo=dt.UTC).timestamp()


def floor_minute(when: dt.datetime) -> dt.datetime:
    return when.replace(second=0, microsecond=0)


def ceil_minute(when: dt.datetime) -> dt.datetime:
    floor = floor_minute(when)
    return floor if floor == when else floor + MINUTE


def split(since: dt.datetime, until: dt.datetime, first: dt.datetime | None,
          end: dt.datetime | None) -> tuple[dt.datetime, dt.datetime] | None:
    """The whole minutes ``[a, b)`` of the window ``[since, until)`` that rollups covering
    ``[first, end)`` can answer; None when there are none (read everything from the calls)."""
    if first is None or end is None:
        return None
    a = max(ceil_minute(since), first)
    b = min(floor_minute(until), end)
    return (a, b) if a < b else None


def bucket(ms: float) -> int:
    """The histogram bucket of a duration in milliseconds (log scale, see BUCKETS_PER_OCTAVE)."""
    return math.floor(BUCKETS_PER_OCTAVE * math.log2(max(ms, MIN_MS)))


def bucket_value(index: int) -> float:
    """The middle (geometric) of a bucket: within ~2.2% of every duration in it."""
    return 2 ** ((index + 0.5) / BUCKETS_PER_OCTAVE)


def histogram(values: Iterable[float]) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in values:
        i = bucket(v)
        out[i] = out.get(i, 0) + 1
    return out


def merge(into: dict[int, int], other: dict[int, int]) -> dict[int, int]:
    for i, n in other.items():
        into[i] = into.get(i, 0) + n
    return into


def encode_histogram(hist: dict[int, int]) -> str:
    return json.dumps({str(i): hist[i] for i in sorted(hist)}, separators=(",", ":"))


def decode_histogram(text: str | None) -> dict[int, int]:
    return {int(i): int(n) for i, n in json.loads(text or "{}").items()}


def hist_percentile(hist: dict[int, int], q: float) -> float | None:
    """:func:`percentile` of the durations a histogram counts, each taken as its bucket's
    middle (so within ~2.2% when the neighbouring ranks share a bucket); None if empty."""
    n = sum(hist.values())
    if not n:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = (n - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, n - 1)
    values: dict[int, float] = {}
    seen = 0
    for i in sorted(hist):
        seen += hist[i]
        for r in (low, high):
            if r not in values and r < seen:
                values[r] = bucket_value(i)
        if high in values:
            break
    return values[low] + (values[high] - values[low]) * (rank - low)


def summarize(minute: dt.datetime, socket: str, counts: dict[str, int], runs: list[float],
              waits: list[float]) -> dict[str, Any]:
    """A rollup row from a minute's counts and the run times and queue waits (ms) of its
    timed calls."""
    runs, waits = sorted(runs), sorted(waits)
    row: dict[str, Any] = {"minute": minute, "socket": socket}
    row.update({k: counts.get(k, 0) for k in COUNTS})
    row.update(timed=len(runs), run_ms_sum=round(sum(runs), 3),
               run_p50_ms=_round(percentile(runs, 50)), run_p95_ms=_round(percentile(runs, 95)),
               run_p99_ms=_round(percentile(runs, 99)), wait_p50_ms=_round(percentile(waits, 50)),
               run_hist=encode_histogram(histogram(runs)), wait_hist=encode_histogram(histogram(waits)))
    return row


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def total(row: dict[str, Any]) -> int:
    """Calls a rollup row counts in and out: it only grows while the Call rows are kept."""
    return sum(row.get(k, 0) for k in ("submitted", "done", "failed", "dead", "cancelled"))


def spark(values: Sequence[float], width: int | None = None) -> str:
    """A text sparkline (``▁▂▃▄▅▆▇█``), scaled to the largest value; blank for zero."""
    bars = "▁▂▃▄▅▆▇█"
    values = list(values)[-width:] if width else list(values)
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(" " if v <= 0 else bars[min(len(bars) - 1, int(v / top * (len(bars) - 1) + 0.5))]
                   for v in values)
