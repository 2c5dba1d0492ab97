"""Metrics from the store: the same numbers after any restart, because they are computed
from the Call rows (the source of truth) rather than counted from events.

Per socket over a window: calls in (submitted) and out (finished) and their rates per
minute, latency percentiles (finished - started of the last attempt), queue wait (started -
submitted), failure rate, and right now: queued, retrying, in flight (running) and the
broker queue's depth. Per-minute series (for sparklines) are bucketed in SQL. Per worker
and host: cpu and memory of local processes (psutil); other hosts report theirs in
``worker.heartbeat`` events.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket as _socket
from collections.abc import Iterable, Sequence
from typing import Any

from peewee import SQL, fn

from .store.models import CALL_STATUS, Call, Processor, Socket, Worker, db, now

#: latency percentiles are computed over at most this many of the window's latest calls
SAMPLE = 20_000
HOST = _socket.gethostname()


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


def _sqlite() -> bool:
    return db.obj.__class__.__name__.startswith("Sqlite")


def _epoch_sql(field):
    """SQL: seconds since the epoch of a timestamp column."""
    if _sqlite():
        # a julian day is a double: ~50 µs off at today's dates, so round to milliseconds
        return fn.round((fn.julianday(field) - 2440587.5) * 86400.0, 3)
    return fn.date_part("epoch", field)


def _ms_between_sql(start, end):
    """SQL: milliseconds from timestamp ``start`` to timestamp ``end``."""
    if _sqlite():
        return (fn.julianday(end) - fn.julianday(start)) * 86_400_000.0
    return fn.date_part("epoch", end - start) * 1000.0


def _bucket_sql(field, since: float, width: float):
    """SQL: the index of the ``width``-second bucket after ``since`` a timestamp falls in."""
    # half a millisecond of slack: both sides are rounded to milliseconds (see _epoch_sql)
    offset = (_epoch_sql(field) - (round(since, 3) - 0.0005)) / width
    return offset.cast("INTEGER") if _sqlite() else fn.floor(offset)


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


def _latencies(since, until, socket) -> dict[str, tuple[list[float], list[float]]]:
    """Per socket: sorted run times and sorted queue waits (ms) of the window's finished calls."""
    ran = _ms_between_sql(Call.started, Call.finished)
    waited = _ms_between_sql(Call.submitted, Call.started)
    query = (Call.select(Call.socket, ran, waited)
             .where((Call.finished >= since) & (Call.finished < until) & Call.started.is_null(False)
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


def socket_stats(since: dt.datetime, until: dt.datetime | None = None, socket: str | None = None,
                 transport: Any = None, namespace: str = "") -> list[dict[str, Any]]:
    """One row per socket (busiest first): see the module docstring. ``depth`` is the broker
    queue's ready messages when a ``transport`` is given (None if it cannot say)."""
    since, until = window(since, until)
    seconds = (until - since).total_seconds()
    names = {s.name for s in Socket.select(Socket.name)}
    submitted: dict[str, int] = {}
    finished: dict[str, dict[str, int]] = {}
    current: dict[str, dict[str, int]] = {}
    q_in = (Call.select(Call.socket, fn.COUNT(Call.id))
            .where((Call.submitted >= since) & (Call.submitted < until)).group_by(Call.socket))
    q_out = (Call.select(Call.socket, Call.status, fn.COUNT(Call.id))
             .where((Call.finished >= since) & (Call.finished < until)).group_by(Call.socket, Call.status))
    q_now = (Call.select(Call.socket, Call.status, fn.COUNT(Call.id))
             .where(Call.status.in_(("queued", "retrying", "running"))).group_by(Call.socket, Call.status))
    if socket:
        names &= {socket}
        q_in, q_out, q_now = (q.where(Call.socket == socket) for q in (q_in, q_out, q_now))
    for sock, n in q_in.tuples():
        submitted[sock] = n
    for sock, status, n in q_out.tuples():
        finished.setdefault(sock, {})[status] = n
    for sock, status, n in q_now.tuples():
        current.setdefault(sock, {})[status] = n
    latencies = _latencies(since, until, socket)
    rows = []
    for name in names | set(submitted) | set(finished) | set(current):
        done = finished.get(name, {})
        out = sum(done.values())
        bad = done.get("failed", 0) + done.get("dead", 0)
        runs, waits = latencies.get(name, ([], []))
        state = current.get(name, {})
        rows.append({
            "socket": name,
            "in": submitted.get(name, 0), "out": out,
            "in_per_min": per_minute(submitted.get(name, 0), seconds), "out_per_min": per_minute(out, seconds),
            "done": done.get("done", 0), "failed": done.get("failed", 0), "dead": done.get("dead", 0),
            "cancelled": done.get("cancelled", 0),
            "failure_rate": ratio(bad, done.get("done", 0) + bad),
            "p50_ms": _ms(percentile(runs, 50)), "p95_ms": _ms(percentile(runs, 95)),
            "p99_ms": _ms(percentile(runs, 99)),
            "wait_p50_ms": _ms(percentile(waits, 50)), "wait_p95_ms": _ms(percentile(waits, 95)),
            "queued": state.get("queued", 0), "retrying": state.get("retrying", 0),
            "running": state.get("running", 0),
            "depth": _depth(transport, name, namespace),
        })
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
    """Live workers with cpu/rss (local ones) and the calls each finished in the window."""
    from .calls import list_runtime

    if usage is None:
        rows = list_runtime("worker")  # measures cpu over 0.1 s
    else:
        query = (Worker.select(Worker, Processor.name).join(Processor)
                 .where(Worker.status != "stopped").order_by(Processor.name, Worker.pid))
        rows = [{"processor": w.processor.name, "host": w.host, "pid": w.pid, "cpu": w.cpu,
                 "status": w.status, "commit": w.commit, "cpu_percent": None, "rss_mb": None}
                for w in query]
        usage.fill(rows)
    done = worker_calls(since, until)
    for row in rows:
        row["calls"] = done.get((row["host"], row["pid"]), 0)
    return rows


def stats(since: dt.datetime, until: dt.datetime | None = None, socket: str | None = None,
          transport: Any = None, namespace: str = "", workers: bool = True) -> dict[str, Any]:
    """Everything ``ec stats --json`` prints: the window, sockets, workers and this host."""
    since, until = window(since, until)
    out: dict[str, Any] = {
        "since": since.isoformat(timespec="seconds") + "Z",
        "until": until.isoformat(timespec="seconds") + "Z",
        "seconds": round((until - since).total_seconds(), 3),
        "sockets": socket_stats(since, until, socket, transport, namespace),
        "calls": status_counts(socket),
    }
    if workers:
        out["workers"] = worker_stats(since, until)
        out["hosts"] = [Usage().host(0.1)]
    return out
