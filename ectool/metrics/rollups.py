"""Rollups: every complete minute folded into :class:`MinuteStat` rows (see
:mod:`ectool.metrics`), written idempotently, repaired when late outcomes arrive, pruned
after the retention."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from peewee import EXCLUDED, fn

from ..store.models import FINAL_CALL_STATUS, Call, MinuteStat, db, now
from .histogram import MINUTE, TOTAL, floor_minute, summarize
from .sql import as_datetime, minute_sql, ms_between_sql

#: a minute is rolled up once it ended this many seconds ago (outcomes committed late)
SETTLE = 30.0
#: each rollup recounts this many minutes before its mark and redoes those that gained calls
REPAIR = 10
#: minutes rolled up per transaction
CHUNK = 10


def compute(a: dt.datetime, b: dt.datetime, socket: str | None = None,
            totals: bool = True) -> list[dict[str, Any]]:
    """Rollup rows (see :func:`summarize`) of the minutes in ``[a, b)`` from the Call rows:
    one per socket and minute with calls, plus (with ``totals``) each minute's totals row."""
    found: dict[tuple[dt.datetime, str], tuple[dict[str, int], list[float], list[float]]] = {}
    seen: dict[tuple[Any, str], list] = {}

    def entries(minute_key: Any, sock: str):
        got = seen.get((minute_key, sock))
        if got is None:
            minute = as_datetime(minute_key)
            keys = [(minute, sock), (minute, TOTAL)] if totals else [(minute, sock)]
            got = seen[(minute_key, sock)] = [found.setdefault(k, ({}, [], [])) for k in keys]
        return got

    key = minute_sql(Call.submitted)
    q_in = (Call.select(Call.socket, key, fn.COUNT(Call.id))
            .where((Call.submitted >= a) & (Call.submitted < b)).group_by(Call.socket, key))
    key = minute_sql(Call.finished)
    q_out = (Call.select(Call.socket, key, Call.status, Call.attempts, ms_between_sql(Call.started, Call.finished),
                         ms_between_sql(Call.submitted, Call.started))
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
    return as_datetime(first), as_datetime(last) + MINUTE


def _next_activity(after: dt.datetime | None) -> dt.datetime | None:
    """The first minute at or after ``after`` in which a call was submitted or finished."""
    found = []
    for column in (Call.submitted, Call.finished):
        query = Call.select(fn.MIN(column))
        if after is not None:
            query = query.where(column >= after)
        else:
            query = query.where(column.is_null(False))
        value = as_datetime(query.scalar())
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
    rolled = {as_datetime(m): n for m, n in rolled_rows.tuples()}
    quick = sum(Call.select().where((column >= a) & (column < b)).count()
                for column in (Call.submitted, Call.finished))
    if quick <= sum(rolled.values()):
        return 0
    calls: dict[dt.datetime, int] = {}
    for column, where in ((Call.submitted, True), (Call.finished, Call.status.in_(FINAL_CALL_STATUS))):
        key = minute_sql(column)
        query = (Call.select(key, fn.COUNT(Call.id)).where((column >= a) & (column < b) & where).group_by(key))
        for minute, n in query.tuples():
            minute = as_datetime(minute)
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
        first = _next_activity(floor_minute(since) if since is not None else None)
        if first is None:
            return done  # no calls yet: nothing to mark
        cur = first
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
    from ..config import duration

    if not isinstance(retention, dt.timedelta):
        retention = dt.timedelta(seconds=duration(retention))
    cutoff = floor_minute(now() - retention)
    return MinuteStat.delete().where(MinuteStat.minute < cutoff).execute()


def maintain(retention: float | str | dt.timedelta, budget: float | None = None) -> int:
    """What the agent does once a minute (and ``ec stats`` before reading): prune rollups
    older than ``retention``, then roll up what is due, no further back than that (after
    an outage longer than the retention, rolling up starts afresh at its edge)."""
    from ..config import duration

    if not isinstance(retention, dt.timedelta):
        retention = dt.timedelta(seconds=duration(retention))
    prune(retention)
    return rollup(since=now() - retention, budget=budget)
