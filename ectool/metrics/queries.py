"""Reading a window of metrics: from the rollups for the whole minutes they cover and from
the Call rows for the rest (see :mod:`ectool.metrics`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from peewee import SQL, Case, fn

from ..publisher import broker_queue
from ..runtime import worker_rows
from ..store.models import CALL_STATUS, FINAL_CALL_STATUS, Call, MinuteStat, Socket, now
from .histogram import (
    COUNTS,
    TOTAL,
    bucket_count,
    ceil_minute,
    decode_histogram,
    epoch,
    fill,
    hist_percentile,
    histogram,
    merge,
    per_minute,
    percentile,
    ratio,
    split,
)
from .rollups import compute, rolled_up
from .sql import as_datetime, bucket_sql, ms_between_sql
from .usage import Usage

#: latency percentiles are exact over at most this many calls of a window; beyond (or when
#: the Call rows of rolled-up minutes are gone) they come from the per-minute histograms
SAMPLE = 20_000


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
        b = bucket_sql(column, start, width)
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
    ran = ms_between_sql(Call.started, Call.finished)
    waited = ms_between_sql(Call.submitted, Call.started)
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
    exact = middle is None or (everything <= SAMPLE and _timed_calls(middle[0], middle[1], socket) == timed)
    out: dict[str, dict[str, float | None]] = {}
    if exact:
        for sock, (runs, waits) in _latencies(since, until, socket).items():
            out[sock] = {"p50_ms": _ms(percentile(runs, 50)), "p95_ms": _ms(percentile(runs, 95)),
                         "p99_ms": _ms(percentile(runs, 99)), "wait_p50_ms": _ms(percentile(waits, 50)),
                         "wait_p95_ms": _ms(percentile(waits, 95))}
        return out, True
    for sock, (run_hist, wait_hist) in _histograms(since, until, middle, socket).items():
        out[sock] = {"p50_ms": _ms(hist_percentile(run_hist, 50)), "p95_ms": _ms(hist_percentile(run_hist, 95)),
                     "p99_ms": _ms(hist_percentile(run_hist, 99)),
                     "wait_p50_ms": _ms(hist_percentile(wait_hist, 50)),
                     "wait_p95_ms": _ms(hist_percentile(wait_hist, 95))}
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
        minute = as_datetime(r["minute"])
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
    rows: list[dict[str, Any]] = []
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
            "depth": queue_depth(transport, name, namespace),
        }
        if minutes:
            row["minutes"] = series_.get(name, [])
        rows.append(row)
    rows.sort(key=lambda r: (-(r["in"] + r["out"] + r["running"]), r["socket"]))
    return rows


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def queue_depth(transport: Any, socket_name: str, namespace: str) -> int | None:
    if transport is None:
        return None
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


def worker_stats(since: dt.datetime, until: dt.datetime | None = None,
                 usage: Usage | None = None) -> list[dict[str, Any]]:
    """Workers not stopped (a stale one shown ``lost``, :mod:`ectool.runtime`) with cpu/rss
    (local ones) and the calls each finished in the window."""
    from .usage import sample

    rows = worker_rows()
    if usage is None:
        sample(rows)  # measures cpu over 0.1 s
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
