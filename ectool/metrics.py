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
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket as _socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from peewee import EXCLUDED, SQL, Case, fn

from .store.models import (
    CALL_STATUS,
    FINAL_CALL_STATUS,
    Call,
    MinuteStat,
    Socket,
    db,
    now,
    on_sqlite,
)

#: latency percentiles are exact over at most this many calls of a window; beyond (or when
#: the Call rows of rolled-up minutes are gone) they come from the per-minute histograms
SAMPLE = 20_000
HOST = _socket.gethostname()
MINUTE = dt.timedelta(minutes=1)
#: a minute is rolled up once it ended this many seconds ago (outcomes committed late)
SETTLE = 30.0
#: each rollup recounts this many minutes before its mark and redoes those that gained calls
REPAIR = 10
#: minutes rolled up per transaction
CHUNK = 10
#: latency histogram resolution: buckets per doubling (each ~4.4% wide, so +-2.2%)
BUCKETS_PER_OCTAVE = 16
#: run times and waits below this many milliseconds share the lowest bucket
MIN_MS = 0.001
#: the socket of a minute's totals row, which also marks the minute as rolled up
TOTAL = ""
#: what a rollup row counts besides latencies (``out`` is the last four)
COUNTS = ("submitted", "done", "failed", "dead", "cancelled", "retried", "timed")


# -- pure helpers --------------------------------------------------------------------------


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


# -- SQL by dialect ------------------------------------------------------------------------


def _epoch_sql(field):
    """SQL: seconds since the epoch of a timestamp column."""
    if on_sqlite():
        # a julian day is a double: ~50 µs off at today's dates, so round to milliseconds
        return fn.round((fn.julianday(field) - 2440587.5) * 86400.0, 3)
    return fn.date_part("epoch", field)


def _ms_between_sql(start, end):
    """SQL: milliseconds from timestamp ``start`` to timestamp ``end``."""
    if on_sqlite():
        return (fn.julianday(end) - fn.julianday(start)) * 86_400_000.0
    return fn.date_part("epoch", end - start) * 1000.0


def _bucket_sql(field, since: float, width: float):
    """SQL: the index of the ``width``-second bucket after ``since`` a timestamp falls in."""
    # half a millisecond of slack: both sides are rounded to milliseconds (see _epoch_sql)
    offset = (_epoch_sql(field) - (round(since, 3) - 0.0005)) / width
    return offset.cast("INTEGER") if on_sqlite() else fn.floor(offset)


def _minute_sql(field):
    """SQL: the minute a timestamp column falls in (exactly as the column compares: SQLite
    keeps 'YYYY-MM-DD HH:MM:SS.ffffff' text, so its first 16 characters)."""
    if on_sqlite():
        return fn.substr(field, 1, 16)
    return fn.date_trunc("minute", field)


def _as_datetime(value: Any) -> dt.datetime | None:
    """A timestamp as the drivers return it (datetime, or SQLite's text), naive UTC."""
    if value is None or isinstance(value, dt.datetime):
        return value
    text = str(value).replace("T", " ")
    for layout in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return dt.datetime.strptime(text, layout)
        except ValueError:
            continue
    raise ValueError(f"not a timestamp: {value!r}")


# -- rollups ---------------------------------------------------------------------------------


def compute(a: dt.datetime, b: dt.datetime, socket: str | None = None,
            totals: bool = True) -> list[dict[str, Any]]:
    """Rollup rows (see :func:`summarize`) of the minutes in ``[a, b)`` from the Call rows:
    one per socket and minute with calls, plus (with ``totals``) each minute's totals row."""
    found: dict[tuple[dt.datetime, str], tuple[dict[str, int], list[float], list[float]]] = {}
    seen: dict[tuple[Any, str], list] = {}

    def entries(minute_key: Any, sock: str):
        got = seen.get((minute_key, sock))
        if got is None:
            minute = _as_datetime(minute_key)
            keys = [(minute, sock), (minute, TOTAL)] if totals else [(minute, sock)]
            got = seen[(minute_key, sock)] = [found.setdefault(k, ({}, [], [])) for k in keys]
        return got

    key = _minute_sql(Call.submitted)
    q_in = (Call.select(Call.socket, key, fn.COUNT(Call.id))
            .where((Call.submitted >= a) & (Call.submitted < b)).group_by(Call.socket, key))
    key = _minute_sql(Call.finished)
    q_out = (Call.select(Call.socket, key, Call.status, Call.attempts, _ms_between_sql(Call.started, Call.finished),
                         _ms_between_sql(Call.submitted, Call.started))
             .where((Call.finished >= a) & (Call.finished < b) & Call.status.in_(FINAL_CALL_STATUS)))
    if socket:
        q_in, q_out = q_in.where(Call.socket == socket), q_out.where(Call.socket == socket)
    for sock, minute, n in q_in.tuples():
        for counts, _, _ in entries(minute, sock):
            counts["submitted"] = counts.get("submitted", 0) + n
    for sock, minute, status, attempts, ran, waited in db.execute(q_out):  # raw rows: the bulk of the work
        for counts, runs, waits in entries(minute, sock):
            counts[status] = counts.get(status, 0) + 1
            if (attempts or 0) > 1:
                counts["retried"] = counts.get("retried", 0) + 1
            if ran is not None and status in ("done", "failed"):
                runs.append(max(0.0, float(ran)))
                waits.append(max(0.0, float(waited)))
    return [summarize(m, sock, *v) for (m, sock), v in sorted(found.items())]


def rolled_up() -> tuple[dt.datetime, dt.datetime] | None:
    """The minutes ``[first, end)`` the rollups cover, or None before the first rollup."""
    marks = MinuteStat.select(MinuteStat.minute).where(MinuteStat.socket == TOTAL)
    first = marks.order_by(MinuteStat.minute).limit(1).scalar()
    last = marks.order_by(MinuteStat.minute.desc()).limit(1).scalar()
    if first is None or last is None:
        return None
    return _as_datetime(first), _as_datetime(last) + MINUTE


def _next_activity(after: dt.datetime | None) -> dt.datetime | None:
    """The first minute at or after ``after`` in which a call was submitted or finished."""
    found = []
    for column in (Call.submitted, Call.finished):
        query = Call.select(fn.MIN(column))
        if after is not None:
            query = query.where(column >= after)
        else:
            query = query.where(column.is_null(False))
        value = _as_datetime(query.scalar())
        if value is not None:
            found.append(value)
    return floor_minute(min(found)) if found else None


def _total_sql(source):
    """SQL: :func:`total` of a rollup row (``MinuteStat`` or ``EXCLUDED``)."""
    return source.submitted + source.done + source.failed + source.dead + source.cancelled


def _write(rows: list[dict[str, Any]], mark: dt.datetime | None = None) -> None:
    """Upsert rollup rows in one transaction, never shrinking a row (a minute recomputed
    after its Call rows were deleted keeps its counts); ``mark`` adds an empty totals row
    for that minute if there is none, to record that the minutes up to it are rolled up."""
    if mark is not None and not any(r["minute"] == mark and r["socket"] == TOTAL for r in rows):
        rows = [*rows, summarize(mark, TOTAL, {}, [], [])]
    if not rows:
        return
    fields = [f for f in MinuteStat._meta.sorted_fields if f.name not in ("id", "minute", "socket")]
    grows = _total_sql(EXCLUDED) > _total_sql(MinuteStat)
    with db.atomic():
        for i in range(0, len(rows), 200):
            (MinuteStat.insert_many(rows[i:i + 200])
             .on_conflict(conflict_target=[MinuteStat.minute, MinuteStat.socket], preserve=fields, where=grows)
             .execute())


def _repair(a: dt.datetime, b: dt.datetime) -> int:
    """Redo the rolled-up minutes in ``[a, b)`` whose Call rows now count more calls than
    their rollup (outcomes committed after their minute was rolled up); how many.

    First two plain counts over the timestamp indexes (cheap); only when they exceed the
    rollups are the minutes counted one by one."""
    if a >= b:
        return 0
    rolled_rows = MinuteStat.select(MinuteStat.minute, _total_sql(MinuteStat)).where(
        (MinuteStat.socket == TOTAL) & (MinuteStat.minute >= a) & (MinuteStat.minute < b))
    rolled = {_as_datetime(m): n for m, n in rolled_rows.tuples()}
    quick = sum(Call.select().where((column >= a) & (column < b)).count()
                for column in (Call.submitted, Call.finished))
    if quick <= sum(rolled.values()):
        return 0
    calls: dict[dt.datetime, int] = {}
    for column, where in ((Call.submitted, True), (Call.finished, Call.status.in_(FINAL_CALL_STATUS))):
        key = _minute_sql(column)
        query = (Call.select(key, fn.COUNT(Call.id)).where((column >= a) & (column < b) & where).group_by(key))
        for minute, n in query.tuples():
            minute = _as_datetime(minute)
            calls[minute] = calls.get(minute, 0) + n
    stale = sorted(m for m, n in calls.items() if n > rolled.get(m, 0))
    for minute in stale:
        _write(compute(minute, minute + MINUTE))
    return len(stale)


def rollup(until: dt.datetime | None = None, *, since: dt.datetime | None = None,
           budget: float | None = None) -> int:
    """Roll up every complete minute before ``until`` (default: :data:`SETTLE` seconds ago)
    that is not rolled up yet; return how many minutes were written or redone.

    Starts after the last rolled-up minute (on a store never rolled up: at its first call,
    or at ``since`` if later), skips minutes without calls, and writes :data:`CHUNK` minutes
    per transaction, so its cost is bounded by the calls since the last rollup. Running it
    twice, or from several processes at once, gives the same rows. With ``budget`` seconds
    it stops between chunks once they are spent (the next call goes on from there).
    """
    horizon = floor_minute(until if until is not None else now() - dt.timedelta(seconds=SETTLE))
    started = time.monotonic()
    covered = rolled_up()
    done = chunks = 0
    if covered is not None:
        cur = covered[1]
        done += _repair(max(covered[0], cur - REPAIR * MINUTE), min(cur, horizon))
    else:
        cur = _next_activity(floor_minute(since) if since is not None else None)
        if cur is None:
            return done  # no calls yet: nothing to mark
    while cur < horizon:
        if budget is not None and chunks and time.monotonic() - started > budget:
            break
        nxt = _next_activity(cur)
        if nxt is None or nxt >= horizon:
            _write([], horizon - MINUTE)  # nothing more: the mark moves on
            break
        cur = max(cur, nxt)
        end = min(horizon, cur + CHUNK * MINUTE)
        _write(compute(cur, end), end - MINUTE)
        done += round((end - cur) / MINUTE)
        chunks += 1
        cur = end
    return done


def prune(retention: float | str | dt.timedelta) -> int:
    """Delete rollups of minutes older than ``retention`` (a timedelta, seconds, or a
    duration like ``30d``); return how many rows went."""
    from .config import duration

    if not isinstance(retention, dt.timedelta):
        retention = dt.timedelta(seconds=duration(retention))
    cutoff = floor_minute(now() - retention)
    return MinuteStat.delete().where(MinuteStat.minute < cutoff).execute()


def maintain(retention: float | str | dt.timedelta, budget: float | None = None) -> int:
    """What the agent does once a minute (and ``ec stats`` before reading): prune rollups
    older than ``retention``, then roll up what is due, no further back than that (after
    an outage longer than the retention, rolling up starts afresh at its edge)."""
    from .config import duration

    if not isinstance(retention, dt.timedelta):
        retention = dt.timedelta(seconds=duration(retention))
    prune(retention)
    return rollup(since=now() - retention, budget=budget)


# -- queries --------------------------------------------------------------------------------


def window(since: dt.datetime, until: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    return since, until or now()


def status_counts(socket: str | None = None) -> dict[str, int]:
    """Every call status with its number of calls (of ``socket``), right now."""
    counts = dict.fromkeys(CALL_STATUS, 0)
    query = Call.select(Call.status, fn.COUNT(Call.id)).group_by(Call.status)
    if socket:
        query = query.where(Call.socket == socket)
    for status, n in query.tuples():
        counts[status] = n
    return counts


def series(since: dt.datetime, until: dt.datetime | None = None, width: float = 60.0,
           socket: str | None = None) -> dict[str, dict[str, list[int]]]:
    """Per socket, calls submitted (``in``), finished (``out``) and failed or dead
    (``failed``) in each ``width``-second bucket from ``since`` on."""
    since, until = window(since, until)
    start = epoch(since)
    n = bucket_count(epoch(until) - start, width)
    out: dict[str, dict[str, dict[int, int]]] = {}
    for column, name in ((Call.submitted, "in"), (Call.finished, "out")):
        b = _bucket_sql(column, start, width)
        query = (Call.select(Call.socket, b.alias("b"), Call.status, fn.COUNT(Call.id))
                 .where((column >= since) & (column < until))
                 .group_by(Call.socket, SQL("b"), Call.status))
        if socket:
            query = query.where(Call.socket == socket)
        for sock, index, status, count in query.tuples():
            index = int(index)
            if not 0 <= index < n:
                continue
            entry = out.setdefault(sock, {"in": {}, "out": {}, "failed": {}})
            entry[name][index] = entry[name].get(index, 0) + count
            if name == "out" and status in ("failed", "dead"):
                entry["failed"][index] = entry["failed"].get(index, 0) + count
    return {s: {k: fill(v, n) for k, v in e.items()} for s, e in out.items()}


def _latencies(since, until, socket, middle=None) -> dict[str, tuple[list[float], list[float]]]:
    """Per socket: sorted run times and sorted queue waits (ms) of the window's finished calls
    (those outside ``middle`` when given), at most :data:`SAMPLE`, latest first."""
    ran = _ms_between_sql(Call.started, Call.finished)
    waited = _ms_between_sql(Call.submitted, Call.started)
    query = (Call.select(Call.socket, ran, waited)
             .where(_outside(Call.finished, since, until, middle) & Call.started.is_null(False)
                    & Call.status.in_(("done", "failed")))
             .order_by(Call.finished.desc()).limit(SAMPLE))
    if socket:
        query = query.where(Call.socket == socket)
    found: dict[str, tuple[list[float], list[float]]] = {}
    for sock, took, wait in query.tuples():
        runs, waits = found.setdefault(sock, ([], []))
        runs.append(max(0.0, float(took)))
        waits.append(max(0.0, float(wait)))
    for runs, waits in found.values():
        runs.sort()
        waits.sort()
    return found


def _outside(column, since: dt.datetime, until: dt.datetime, middle: tuple[dt.datetime, dt.datetime] | None):
    """SQL: ``column`` within the window but outside its rolled-up ``middle``."""
    if middle is None:
        return (column >= since) & (column < until)
    a, b = middle
    return ((column >= since) & (column < a)) | ((column >= b) & (column < until))


def _rolled_counts(middle, socket) -> dict[str, dict[str, int]]:
    """Per socket, the rollups' counts summed over the minutes ``middle``."""
    if middle is None:
        return {}
    query = (MinuteStat.select(MinuteStat.socket, *(fn.SUM(getattr(MinuteStat, k)) for k in COUNTS))
             .where((MinuteStat.minute >= middle[0]) & (MinuteStat.minute < middle[1]) & (MinuteStat.socket != TOTAL))
             .group_by(MinuteStat.socket))
    if socket:
        query = query.where(MinuteStat.socket == socket)
    return {row[0]: {k: int(v or 0) for k, v in zip(COUNTS, row[1:], strict=True)} for row in query.tuples()}


def _call_counts(since, until, middle, socket) -> dict[str, dict[str, int]]:
    """Per socket, the same counts from the Call rows of the window outside ``middle``."""
    found: dict[str, dict[str, int]] = {}
    q_in = (Call.select(Call.socket, fn.COUNT(Call.id))
            .where(_outside(Call.submitted, since, until, middle)).group_by(Call.socket))
    timed = fn.SUM(Case(None, [(Call.started.is_null(False) & Call.status.in_(("done", "failed")), 1)], 0))
    retried = fn.SUM(Case(None, [(Call.attempts > 1, 1)], 0))
    q_out = (Call.select(Call.socket, Call.status, fn.COUNT(Call.id), retried, timed)
             .where(_outside(Call.finished, since, until, middle) & Call.status.in_(FINAL_CALL_STATUS))
             .group_by(Call.socket, Call.status))
    if socket:
        q_in, q_out = q_in.where(Call.socket == socket), q_out.where(Call.socket == socket)
    for sock, n in q_in.tuples():
        found.setdefault(sock, {})["submitted"] = n
    for sock, status, n, again, ran in q_out.tuples():
        counts = found.setdefault(sock, {})
        counts[status] = counts.get(status, 0) + n
        counts["retried"] = counts.get("retried", 0) + int(again or 0)
        counts["timed"] = counts.get("timed", 0) + int(ran or 0)
    return found


def _timed_calls(a: dt.datetime, b: dt.datetime, socket) -> int:
    """Call rows with a run time that finished in ``[a, b)``."""
    query = Call.select(fn.COUNT(Call.id)).where(
        (Call.finished >= a) & (Call.finished < b) & Call.started.is_null(False) & Call.status.in_(("done", "failed")))
    if socket:
        query = query.where(Call.socket == socket)
    return query.scalar() or 0


def _histograms(since, until, middle, socket) -> dict[str, tuple[dict[int, int], dict[int, int]]]:
    """Per socket, run-time and queue-wait histograms of the window: the rollups' merged
    over ``middle``, plus the Call rows outside it (at most :data:`SAMPLE`, latest first)."""
    found: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    query = (MinuteStat.select(MinuteStat.socket, MinuteStat.run_hist, MinuteStat.wait_hist)
             .where((MinuteStat.minute >= middle[0]) & (MinuteStat.minute < middle[1])
                    & (MinuteStat.socket != TOTAL) & (MinuteStat.timed > 0)))
    if socket:
        query = query.where(MinuteStat.socket == socket)
    for sock, runs, waits in query.tuples():
        run_hist, wait_hist = found.setdefault(sock, ({}, {}))
        merge(run_hist, decode_histogram(runs))
        merge(wait_hist, decode_histogram(waits))
    for sock, (runs, waits) in _latencies(since, until, socket, middle).items():
        run_hist, wait_hist = found.setdefault(sock, ({}, {}))
        merge(run_hist, histogram(runs))
        merge(wait_hist, histogram(waits))
    return found


def _latency(since, until, middle, counts, socket) -> tuple[dict[str, dict[str, float | None]], bool]:
    """Per socket p50/p95/p99 run time and p50/p95 wait, and whether they are exact: they are
    when the window holds at most :data:`SAMPLE` timed calls and the Call rows of its
    rolled-up minutes are all still there; otherwise they come from the histograms."""
    timed = sum(c.get("timed", 0) for c in counts["rolled"].values())
    everything = timed + sum(c.get("timed", 0) for c in counts["calls"].values())
    exact = middle is None or (everything <= SAMPLE and _timed_calls(*middle, socket) == timed)
    out: dict[str, dict[str, float | None]] = {}
    if exact:
        for sock, (runs, waits) in _latencies(since, until, socket).items():
            out[sock] = {"p50_ms": _ms(percentile(runs, 50)), "p95_ms": _ms(percentile(runs, 95)),
                         "p99_ms": _ms(percentile(runs, 99)), "wait_p50_ms": _ms(percentile(waits, 50)),
                         "wait_p95_ms": _ms(percentile(waits, 95))}
        return out, True
    for sock, (runs, waits) in _histograms(since, until, middle, socket).items():
        out[sock] = {"p50_ms": _ms(hist_percentile(runs, 50)), "p95_ms": _ms(hist_percentile(runs, 95)),
                     "p99_ms": _ms(hist_percentile(runs, 99)), "wait_p50_ms": _ms(hist_percentile(waits, 50)),
                     "wait_p95_ms": _ms(hist_percentile(waits, 95))}
    return out, False


def minute_series(since: dt.datetime, until: dt.datetime | None = None, socket: str | None = None,
                  middle: Any = ...) -> dict[str, list[dict[str, Any]]]:
    """Per socket, a row per whole minute from the first after ``since`` up to the current
    one (so far) in which it had calls: from the rollups where they cover it, else from the
    Call rows. Minutes without calls are left out."""
    since, until = window(since, until)
    if middle is ...:
        covered = rolled_up()
        middle = split(since, until, *(covered or (None, None)))
    start = ceil_minute(since)
    rows: list[dict[str, Any]] = []
    if middle is None:
        rows += compute(start, until, socket, totals=False)
    else:
        if start < middle[0]:
            rows += compute(start, middle[0], socket, totals=False)
        query = (MinuteStat.select().where((MinuteStat.minute >= middle[0]) & (MinuteStat.minute < middle[1])
                                           & (MinuteStat.socket != TOTAL)).order_by(MinuteStat.minute).dicts())
        if socket:
            query = query.where(MinuteStat.socket == socket)
        rows += list(query)
        rows += compute(middle[1], until, socket, totals=False)
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        minute = _as_datetime(r["minute"])
        out.setdefault(r["socket"], []).append({
            "minute": minute.isoformat(timespec="minutes") + "Z",
            "in": r["submitted"], "out": r["done"] + r["failed"] + r["dead"] + r["cancelled"],
            "done": r["done"], "failed": r["failed"], "dead": r["dead"], "cancelled": r["cancelled"],
            "retried": r["retried"], "p50_ms": _ms(r["run_p50_ms"]), "p95_ms": _ms(r["run_p95_ms"]),
            "p99_ms": _ms(r["run_p99_ms"]), "wait_p50_ms": _ms(r["wait_p50_ms"]),
        })
    for series_ in out.values():
        series_.sort(key=lambda e: e["minute"])
    return out


def socket_stats(since: dt.datetime, until: dt.datetime | None = None, socket: str | None = None,
                 transport: Any = None, namespace: str = "", minutes: bool = False) -> list[dict[str, Any]]:
    """One row per socket (busiest first): see the module docstring. ``depth`` is the broker
    queue's ready messages when a ``transport`` is given (None if it cannot say). Counts
    come from the rollups for the whole minutes they cover and from the Call rows for the
    rest of the window; ``latency_exact`` says whether the percentiles are exact (see
    :func:`_latency`). With ``minutes``, each row has its per-minute series (see
    :func:`minute_series`)."""
    since, until = window(since, until)
    seconds = (until - since).total_seconds()
    covered = rolled_up()
    middle = split(since, until, *(covered or (None, None)))
    names = {s.name for s in Socket.select(Socket.name)}
    counts = {"rolled": _rolled_counts(middle, socket), "calls": _call_counts(since, until, middle, socket)}
    window_counts: dict[str, dict[str, int]] = {}
    for part in counts.values():
        for sock, c in part.items():
            mine = window_counts.setdefault(sock, {})
            for k, n in c.items():
                mine[k] = mine.get(k, 0) + n
    current: dict[str, dict[str, int]] = {}
    q_now = (Call.select(Call.socket, Call.status, fn.COUNT(Call.id))
             .where(Call.status.in_(("queued", "retrying", "running"))).group_by(Call.socket, Call.status))
    if socket:
        names &= {socket}
        q_now = q_now.where(Call.socket == socket)
    for sock, status, n in q_now.tuples():
        current.setdefault(sock, {})[status] = n
    latencies, exact = _latency(since, until, middle, counts, socket)
    series_ = minute_series(since, until, socket, middle) if minutes else {}
    rows = []
    for name in names | set(window_counts) | set(current):
        c = window_counts.get(name, {})
        out = sum(c.get(k, 0) for k in FINAL_CALL_STATUS)
        bad = c.get("failed", 0) + c.get("dead", 0)
        lat = latencies.get(name, {})
        state = current.get(name, {})
        row = {
            "socket": name,
            "in": c.get("submitted", 0), "out": out,
            "in_per_min": per_minute(c.get("submitted", 0), seconds), "out_per_min": per_minute(out, seconds),
            "done": c.get("done", 0), "failed": c.get("failed", 0), "dead": c.get("dead", 0),
            "cancelled": c.get("cancelled", 0), "retried": c.get("retried", 0),
            "failure_rate": ratio(bad, c.get("done", 0) + bad),
            "p50_ms": lat.get("p50_ms"), "p95_ms": lat.get("p95_ms"), "p99_ms": lat.get("p99_ms"),
            "wait_p50_ms": lat.get("wait_p50_ms"), "wait_p95_ms": lat.get("wait_p95_ms"),
            "latency_exact": exact,
            "queued": state.get("queued", 0), "retrying": state.get("retrying", 0),
            "running": state.get("running", 0),
            "depth": _depth(transport, name, namespace),
        }
        if minutes:
            row["minutes"] = series_.get(name, [])
        rows.append(row)
    rows.sort(key=lambda r: (-(r["in"] + r["out"] + r["running"]), r["socket"]))
    return rows


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _depth(transport: Any, socket_name: str, namespace: str) -> int | None:
    if transport is None:
        return None
    from .calls import broker_queue

    try:
        return transport.depth(broker_queue(socket_name, namespace))
    except Exception:  # noqa: BLE001 - a missing queue or a lost broker: unknown, not fatal
        return None


def worker_calls(since: dt.datetime, until: dt.datetime | None = None) -> dict[tuple[str, int], int]:
    """Calls each worker process (host, pid) finished in the window."""
    since, until = window(since, until)
    query = (Call.select(Call.host, Call.worker_pid, fn.COUNT(Call.id))
             .where((Call.finished >= since) & (Call.finished < until) & Call.worker_pid.is_null(False))
             .group_by(Call.host, Call.worker_pid))
    return {(host, pid): n for host, pid, n in query.tuples()}


class Usage:
    """cpu% and RSS of local processes between successive samples (no sleeping: keep one
    instance and call :meth:`fill` on every refresh; the first sample of a process says 0)."""

    def __init__(self) -> None:
        self.procs: dict[int, Any] = {}
        self.host_cpu: float | None = None

    def fill(self, rows: Iterable[dict[str, Any]]) -> None:
        """Set ``cpu_percent`` and ``rss_mb`` on rows (with ``host`` and ``pid``) of this host."""
        import psutil

        for row in rows:
            if row.get("host") != HOST or not row.get("pid"):
                continue
            p = self.procs.get(row["pid"])
            try:
                if p is None:
                    p = self.procs[row["pid"]] = psutil.Process(row["pid"])
                    p.cpu_percent(None)
                row["cpu_percent"] = round(p.cpu_percent(None), 1)
                row["rss_mb"] = round(p.memory_info().rss / 2**20, 1)
            except psutil.Error:
                self.procs.pop(row["pid"], None)

    def host(self, interval: float | None = None) -> dict[str, Any]:
        """This host's cpu% since the last call (or over ``interval`` seconds), memory use
        and load average."""
        import psutil

        cpu = psutil.cpu_percent(interval)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"host": HOST, "cpu_percent": cpu, "memory_percent": psutil.virtual_memory().percent,
                "load1": round(load, 2) if load is not None else None, "cpus": os.cpu_count()}


def worker_stats(since: dt.datetime, until: dt.datetime | None = None,
                 usage: Usage | None = None) -> list[dict[str, Any]]:
    """Workers not stopped (a stale one shown ``lost``, :mod:`ectool.runtime`) with cpu/rss
    (local ones) and the calls each finished in the window."""
    from .calls import _local_usage
    from .runtime import worker_rows

    rows = worker_rows()
    if usage is None:
        _local_usage(rows)  # measures cpu over 0.1 s
    else:
        usage.fill(rows)
    done = worker_calls(since, until)
    for row in rows:
        row["calls"] = done.get((row["host"], row["pid"]), 0)
    return rows


def stats(since: dt.datetime, until: dt.datetime | None = None, socket: str | None = None,
          transport: Any = None, namespace: str = "", workers: bool = True, minutes: bool = False) -> dict[str, Any]:
    """Everything ``ec stats --json`` prints: the window, sockets (with ``minutes``, each
    with its per-minute series), workers and this host."""
    since, until = window(since, until)
    covered = rolled_up()
    out: dict[str, Any] = {
        "since": since.isoformat(timespec="seconds") + "Z",
        "until": until.isoformat(timespec="seconds") + "Z",
        "seconds": round((until - since).total_seconds(), 3),
        "rolled_up": None if covered is None else {
            "first": covered[0].isoformat(timespec="minutes") + "Z",
            "until": covered[1].isoformat(timespec="minutes") + "Z"},
        "sockets": socket_stats(since, until, socket, transport, namespace, minutes=minutes),
        "calls": status_counts(socket),
    }
    if workers:
        out["workers"] = worker_stats(since, until)
        out["hosts"] = [Usage().host(0.1)]
    return out
