"""What the dashboard shows, read from the store in one go (no Textual here).

:func:`load` builds a :class:`Snapshot` from the bound store (and, for queue depths, a
transport); the app calls it in a worker thread every refresh. Every count comes from the
store, so the dashboard agrees with ``ec ls calls`` after any restart.

Reads are checked like the CLI's (``READ_<KIND>``): what the user may not read is left out
and named in :attr:`Snapshot.denied`, so ``ec dash`` never shows more than ``ec ls``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from peewee import fn

from .. import liveness, metrics, runtime
from ..security import allowed
from ..store.models import (
    CALL_STATUS,
    Call,
    Plug,
    Processor,
    Queue,
    Socket,
    now,
)

#: minutes of history behind the In/Out sparklines (one bucket per minute)
HISTORY = 15
#: rates are averaged over the last this many minutes
RATE_MINUTES = 5
CALLS_SHOWN = 200


@dataclass
class Snapshot:
    at: dt.datetime
    counts: dict[str, int]
    hosts: list[str]
    processors: list[dict[str, Any]]
    queues: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    plugs: list[dict[str, Any]]
    host: dict[str, Any] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)  # as ec ls nodes (lost, cordoned, ...)
    denied: list[str] = field(default_factory=list)  # READ_ privileges the user lacks
    schedules: list[dict[str, Any]] = field(default_factory=list)  # as ec stats --schedules


def parse_filter(text: str) -> tuple[str | None, str | None]:
    """A calls-view filter: words that are call statuses filter by status, any other word
    by socket name (substring). ``"failed add"`` -> ("failed", "add")."""
    status = socket = None
    for word in text.split():
        if word in CALL_STATUS:
            status = word
        else:
            socket = word
    return status, socket


def recent_calls(status: str | None = None, socket: str | None = None,
                 limit: int = CALLS_SHOWN) -> list[dict[str, Any]]:
    query = Call.select(Call.id, Call.socket, Call.status, Call.attempts, Call.submitted, Call.started,
                        Call.finished, Call.error_type, Call.root, Call.commit).order_by(Call.submitted.desc())
    if status:
        query = query.where(Call.status == status)
    if socket:
        query = query.where(Call.socket.contains(socket))
    rows = []
    for c in query.limit(limit):
        took = (c.finished - c.started).total_seconds() * 1000 if c.finished and c.started else None
        rows.append({"id": c.id, "socket": c.socket, "status": c.status, "attempts": c.attempts,
                     "submitted": c.submitted, "ms": took, "error_type": c.error_type,
                     "root": c.root, "commit": c.commit})
    return rows


def _sum(lists: list[list[int]], n: int) -> list[int]:
    out = [0] * n
    for values in lists:
        for i, v in enumerate(values[:n]):
            out[i] += v
    return out


def load(usage: metrics.Usage, transport: Any = None, namespace: str = "",
         calls_filter: str = "") -> Snapshot:
    """Everything the views show, from the store (depths from ``transport`` when given)."""
    may = {kind: allowed(f"READ_{kind}") for kind in READS}
    snap = _load(usage, transport, namespace, calls_filter if may["CALL"] else "")
    return snap if all(may.values()) else _restricted(snap, may)


#: the object kinds the dashboard reads
READS = ("PROCESSOR", "QUEUE", "SOCKET", "AGENT", "WORKER", "CALL", "PLUG", "NODE")


#: Snapshot list -> the READ_ kinds it needs: ``all`` of them, or ``any`` one of them
NEEDS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "processors": (all, ("PROCESSOR", "SOCKET")),
    "queues": (all, ("QUEUE",)),
    "agents": (all, ("AGENT",)),
    "workers": (all, ("WORKER",)),
    "hosts": (any, ("AGENT", "WORKER")),
    "plugs": (all, ("PLUG",)),
    "nodes": (all, ("NODE",)),
}
#: per-row call figures, zeroed without READ_CALL (lists stay as long, of zeros)
CALL_FIGURES = ("in", "out", "rate", "running", "in_per_min", "out_per_min", "queued")


def hidden(may: dict[str, bool]) -> list[str]:
    """The Snapshot lists a user with these READ_ privileges may not see (pure)."""
    return [name for name, (rule, kinds) in NEEDS.items() if not rule(may[k] for k in kinds)]


def _restricted(snap: Snapshot, may: dict[str, bool]) -> Snapshot:
    """``snap`` without what the user may not read."""
    if not may["CALL"]:
        snap.counts, snap.calls = {}, []
        for row in snap.processors + snap.queues:
            for key in CALL_FIGURES:
                if key in row:
                    row[key] = [0] * len(row[key]) if isinstance(row[key], list) else 0
    for name in hidden(may):
        setattr(snap, name, [])
    snap.denied = [f"READ_{kind}" for kind, ok in may.items() if not ok]
    return snap


def _load(usage: metrics.Usage, transport: Any = None, namespace: str = "",
          calls_filter: str = "") -> Snapshot:
    at = now()
    series = metrics.series(at - dt.timedelta(minutes=HISTORY), at)
    sockets = list(Socket.select(Socket.name, Socket.processor, Socket.queue))
    current: dict[str, dict[str, int]] = {}
    for sock, status, n in (Call.select(Call.socket, Call.status, fn.COUNT(Call.id))
                            .where(Call.status.in_(("queued", "retrying", "running")))
                            .group_by(Call.socket, Call.status).tuples()):
        current.setdefault(sock, {})[status] = n
    agents = runtime.agent_rows(at)
    worker_rows = runtime.worker_rows(at=at, agents=agents)
    nodes = runtime.node_rows(at, agents=agents, workers=worker_rows)
    usage.fill(worker_rows)
    serving = [w for w in worker_rows if liveness.live(w["status"])]
    empty = {"in": [0] * HISTORY, "out": [0] * HISTORY, "failed": [0] * HISTORY}
    processors = []
    for p in Processor.select().order_by(Processor.name):
        mine = [s for s in sockets if s.processor_id == p.id]
        ins = _sum([series.get(s.name, empty)["in"] for s in mine], HISTORY)
        outs = _sum([series.get(s.name, empty)["out"] for s in mine], HISTORY)
        workers = [w for w in serving if w["processor"] == p.name]
        commits = sorted({w["commit"] for w in workers if w["commit"]})
        processors.append({
            "name": p.name, "requested": p.requested_status, "status": p.status, "reason": p.status_reason,
            "hosts": sorted({w["host"] for w in workers}), "workers": len(workers),
            "commit": (p.commit or (commits[0] if commits else "") or "")[:12],
            "branch": p.branch or p.deployed_branch or "HEAD",
            "in": ins, "out": outs, "rate": round(sum(outs[-RATE_MINUTES:]) / RATE_MINUTES, 1),
            "sockets": [s.name for s in mine],
            "running": sum(current.get(s.name, {}).get("running", 0) for s in mine),
        })
    queues = []
    for q in Queue.select().order_by(Queue.name):
        mine = [s for s in sockets if s.queue_id == q.id]
        depths = [metrics.queue_depth(transport, s.name, namespace) for s in mine] if transport else []
        outs = _sum([series.get(s.name, empty)["out"] for s in mine], HISTORY)
        ins = _sum([series.get(s.name, empty)["in"] for s in mine], HISTORY)
        queues.append({
            "name": q.name, "type": q.type, "kind": q.queue_type, "max_length": q.max_length,
            "sockets": len(mine),
            "depth": sum(d for d in depths if d is not None) if any(d is not None for d in depths) else None,
            "queued": sum(current.get(s.name, {}).get("queued", 0) + current.get(s.name, {}).get("retrying", 0)
                          for s in mine),
            "in_per_min": round(sum(ins[-RATE_MINUTES:]) / RATE_MINUTES, 1),
            "out_per_min": round(sum(outs[-RATE_MINUTES:]) / RATE_MINUTES, 1), "out": outs,
        })
    for a in agents:
        a["host"] = a["node"]
    hosts = sorted({a["host"] for a in agents if a["status"] == "online"} | {w["host"] for w in serving})
    plugs = [{"name": p.name, "source": p.source.name, "target": p.target.name, "argument": p.argument}
             for p in Plug.select().order_by(Plug.name)]
    return Snapshot(at=at, counts=metrics.status_counts(), hosts=hosts, processors=processors, queues=queues,
                    agents=agents, workers=worker_rows, calls=recent_calls(*parse_filter(calls_filter)),
                    plugs=plugs, host=usage.host(), nodes=nodes, schedules=_schedules())


def _schedules() -> list[dict[str, Any]]:
    """Each schedule's next tick, lateness and counts (shown with the plugs: a flow's start);
    none for a user without READ_SCHEDULE."""
    from .. import schedules

    return schedules.summary() if allowed("READ_SCHEDULE") else []


def call_graph(call_id: str) -> tuple[Any, dict[str | None, list[Any]]]:
    """The root call of ``call_id``'s workflow and its parent -> children map."""
    from ..calls import call_tree

    return call_tree(call_id)

