"""What runs where: workers, agents and nodes as rows, with the liveness rule applied.

``ec ls workers|agents|nodes``, ``ec stats``/``ec top`` and the dashboard all build their
rows here, so a worker whose heartbeat is stale (or whose agent is lost) is ``lost``
everywhere, never ``running`` in one view and lost in another (:mod:`ectool.liveness`).
Only CPU and memory figures are left to the callers (psutil, for this host's processes).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from peewee import JOIN

from . import liveness
from .store.models import Agent, Node, Placement, Processor, Worker, now


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") if t else None


def agent_rows(at: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every agent: its node, pid, cores, shown status, heartbeat and placements (pxN)."""
    at = at or now()
    bound = liveness.agent_stale()
    placed: dict[int, list[str]] = {}
    for p in Placement.select(Placement, Processor.name).join(Processor).order_by(Processor.name):
        placed.setdefault(p.agent_id, []).append(f"{p.processor.name}x{p.workers}")
    return [{"name": a.name, "node": a.node.name, "pid": a.pid, "cpus": a.cpus,
             "status": liveness.agent_state(a.status, a.heartbeat, at, bound),
             "heartbeat": _iso(a.heartbeat), "processors": placed.get(a.id, [])}
            for a in Agent.select(Agent, Node).join(Node).order_by(Agent.name)]


def worker_rows(everything: bool = False, at: dt.datetime | None = None,
                agents: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Workers (all with ``everything``, else those not stopped) with their shown status:
    ``lost`` once the heartbeat is older than :data:`~ectool.liveness.WORKER_ALIVE` or the
    agent that ran them is lost. ``cpu_percent``/``rss_mb`` are left for the caller."""
    at = at or now()
    shown = {a["name"]: a["status"] for a in (agents if agents is not None else agent_rows(at))}
    query = (Worker.select(Worker, Processor.name.alias("processor_name"), Agent.name.alias("agent_name"))
             .join(Processor).switch(Worker).join(Agent, join_type=JOIN.LEFT_OUTER)
             .order_by(Processor.name, Worker.host, Worker.pid))
    if not everything:
        query = query.where(Worker.status != "stopped")
    rows = []
    for w in query.objects():
        agent = w.agent_name
        rows.append({"processor": w.processor_name, "host": w.host, "pid": w.pid, "cpu": w.cpu,
                     "status": liveness.worker_state(w.status, w.heartbeat, at, liveness.WORKER_ALIVE,
                                                     shown.get(agent)),
                     "commit": w.commit, "agent": agent, "heartbeat": _iso(w.heartbeat),
                     "cpu_percent": None, "rss_mb": None})
    return rows


def live_workers(processor_id: int, at: dt.datetime | None = None) -> int:
    """How many workers of a processor serve now (running, heartbeat fresh, agent not lost)."""
    at = at or now()
    fresh = at - dt.timedelta(seconds=liveness.WORKER_ALIVE)
    query = (Worker.select(Worker.status, Worker.heartbeat, Agent.status.alias("agent_status"),
                           Agent.heartbeat.alias("agent_heartbeat"))
             .join(Agent, join_type=JOIN.LEFT_OUTER)
             .where((Worker.processor == processor_id) & (Worker.status == "running") & (Worker.heartbeat >= fresh)))
    bound = liveness.agent_stale()
    count = 0
    for w in query.dicts():
        agent = (liveness.agent_state(w["agent_status"], w["agent_heartbeat"], at, bound)
                 if w["agent_status"] is not None else None)
        count += liveness.live(liveness.worker_state(w["status"], w["heartbeat"], at, liveness.WORKER_ALIVE, agent))
    return count


def node_rows(at: dt.datetime | None = None, agents: list[dict[str, Any]] | None = None,
              workers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every node: its admin's wish and shown state (:func:`~ectool.liveness.node_state`),
    cores, load, agents, live workers and the processors running there (pxN). ``agents``
    and ``workers``: rows already built by :func:`agent_rows` and :func:`worker_rows`."""
    at = at or now()
    agents = agent_rows(at) if agents is None else agents
    workers = worker_rows(at=at, agents=agents) if workers is None else workers
    workers = [w for w in workers if liveness.live(w["status"])]
    rows = []
    for n in Node.select().order_by(Node.name):
        mine = [a for a in agents if a["node"] == n.name]
        names = {a["name"] for a in mine}
        here = [w for w in workers if w["agent"] in names or (w["agent"] is None and w["host"] == n.name)]
        procs: dict[str, int] = {}
        for w in here:
            procs[w["processor"]] = procs.get(w["processor"], 0) + 1
        placed = any(a["processors"] for a in mine)
        rows.append({"name": n.name, "state": liveness.node_state(n.state, [a["status"] for a in mine],
                                                                    placed or bool(here)),
                     "wish": n.state, "cpus": n.cpus, "load": n.load1, "memory": n.memory,
                     "agents": sorted(names), "workers": len(here),
                     "processors": [f"{p}x{c}" for p, c in sorted(procs.items())]})
    return rows
