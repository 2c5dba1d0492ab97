"""Operating hosts: cordon, uncordon and drain a node (``ec node ...``).

The admin's wish is stored on the node (``Node.state``: schedulable, cordoned, draining);
agents act on it as they claim work (:func:`agentd.reconcile.plan_claims`): a cordoned node
takes no new placements, a draining one hands its processors over make-before-break. What a
node is shown as (online, cordoned, draining, drained, offline, lost) comes from
:func:`ectool.liveness.node_state`, through :func:`ectool.runtime.node_rows`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from .errors import CallTimeout, NotFound, UsageError
from .security import require
from .store.models import Node, db

#: ec node ACTION -> the state it stores
WISHES = {"cordon": "cordoned", "uncordon": "schedulable", "drain": "draining"}


def get_node(name: str) -> Node:
    """The node called ``name``; :class:`NotFound` (exit 2) naming the known ones otherwise."""
    node = Node.get_or_none(Node.name == name)
    if node is None:
        known = [n.name for n in Node.select(Node.name).order_by(Node.name).limit(10)]
        raise NotFound(f"no node named {name!r} (known: {', '.join(known) or 'none'}; see ec ls nodes)")
    return node


def set_state(name: str, action: str) -> Node:
    """Record ``action`` (cordon, uncordon, drain) on node ``name`` (checks UPDATE_NODE)."""
    require("UPDATE_NODE")
    with db.atomic():
        node = get_node(name)
        node.state = WISHES[action]
        node.save()
        return node


def row(name: str) -> dict[str, Any]:
    """Node ``name`` as ``ec ls nodes`` shows it."""
    from .runtime import node_rows

    get_node(name)
    return next(r for r in node_rows() if r["name"] == name)


def shortfall(name: str) -> dict[str, int]:
    """processor -> workers it still lacks off draining nodes, for each processor placed on
    node ``name``: the capacity other nodes must find before it can be drained."""
    from .liveness import agent_stale
    from .store.models import Agent, Placement, Processor, now

    cutoff = now() - dt.timedelta(seconds=agent_stale())
    placed = list(Placement.select(Placement.workers, Processor.name, Processor.concurrency, Node.name, Node.state)
                  .join(Processor).switch(Placement).join(Agent).join(Node)
                  .where((Agent.status == "online") & (Agent.heartbeat >= cutoff)).tuples())
    here = {proc: conc for _, proc, conc, node, _ in placed if node == name}
    elsewhere: dict[str, int] = {}
    for workers, proc, _, _, state in placed:
        if state != "draining":
            elsewhere[proc] = elsewhere.get(proc, 0) + workers
    return {proc: conc - elsewhere.get(proc, 0) for proc, conc in sorted(here.items())
            if conc > elsewhere.get(proc, 0)}


def waiting_for(missing: dict[str, int]) -> str:
    """What a drain waits for, given :func:`shortfall`: capacity, or replacements starting."""
    if not missing:
        return "replacements are starting on other nodes"
    lacks = ", ".join(f"{proc} {n} worker(s)" for proc, n in missing.items())
    return f"waiting for capacity on other nodes ({lacks} short); the old workers keep serving"


def wait_drained(name: str, timeout: float | None = None, every: float = 0.5,
                 progress: Callable[[dict[str, Any], str], None] = lambda _row, _why: None) -> dict[str, Any]:
    """Wait until node ``name`` runs nothing (shown drained, offline or lost), calling
    ``progress(row, why)`` whenever what still runs there, or what it waits for, changes;
    :class:`CallTimeout` (exit 4) after ``timeout`` seconds, saying what still runs and why."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = None
    while True:
        current = row(name)
        if current["state"] in ("drained", "offline", "lost") and not current["workers"]:
            return current
        if current["wish"] != "draining":
            raise UsageError(f"node {name!r} is no longer draining (it is {current['state']})")
        why = waiting_for(shortfall(name))
        if (current["processors"], current["workers"], why) != seen:
            seen = (current["processors"], current["workers"], why)
            progress(current, why)
        if deadline is not None and time.monotonic() >= deadline:
            raise CallTimeout(f"node {name!r} still runs {', '.join(current['processors']) or 'workers'} after "
                              f"{timeout:g}s: {why}")
        time.sleep(every)
