"""Operating hosts: cordon, uncordon and drain a node (``ec node ...``).

The admin's wish is stored on the node (``Node.state``: schedulable, cordoned, draining);
agents act on it as they claim work (:func:`agentd.reconcile.plan_claims`): a cordoned node
takes no new placements, a draining one hands its processors over make-before-break. What a
node is shown as (online, cordoned, draining, drained, offline, lost) comes from
:func:`ectool.liveness.node_state`, through :func:`ectool.runtime.node_rows`.
"""

from __future__ import annotations

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


def wait_drained(name: str, timeout: float | None = None, every: float = 0.5,
                 progress: Callable[[dict[str, Any]], None] = lambda _: None) -> dict[str, Any]:
    """Wait until node ``name`` runs nothing (shown drained, offline or lost), calling
    ``progress`` with its row whenever what still runs there changes; :class:`CallTimeout`
    (exit 4) after ``timeout`` seconds, saying what still runs."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = None
    while True:
        current = row(name)
        if current["state"] in ("drained", "offline", "lost") and not current["workers"]:
            return current
        if current["wish"] != "draining":
            raise UsageError(f"node {name!r} is no longer draining (it is {current['state']})")
        if (current["processors"], current["workers"]) != seen:
            seen = (current["processors"], current["workers"])
            progress(current)
        if deadline is not None and time.monotonic() >= deadline:
            raise CallTimeout(f"node {name!r} still runs {', '.join(current['processors']) or 'workers'} after "
                              f"{timeout:g}s: waiting for capacity on other nodes (it keeps serving meanwhile)")
        time.sleep(every)
