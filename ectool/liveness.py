"""Liveness: one rule for what a worker, an agent or a node is shown as.

A row's status is what its process last wrote; a process killed with ``kill -9`` (or a
host that vanished) writes nothing more, so its row would say ``running`` forever. The
heartbeat decides instead: a worker or agent whose heartbeat is older than its staleness
bound is ``lost``, whatever its row says. Pure functions, table-tested
(tests/test_liveness.py); :mod:`ectool.runtime` applies them to the store's rows, and every
place that shows or counts workers, agents or nodes goes through it.
"""

from __future__ import annotations

import datetime as dt
import os

#: seconds between a worker's heartbeats, and the age past which it is presumed dead
WORKER_HEARTBEAT = 10.0
WORKER_ALIVE = 3 * WORKER_HEARTBEAT

LOST = "lost"
#: what a node's admin asked (Node.state) -> what ec ls nodes shows (see node_state)
NODE_WISHES = ("schedulable", "cordoned", "draining")
NODE_SHOWN = ("online", "cordoned", "draining", "drained", "offline", "lost")
#: worker statuses that are final: the heartbeat no longer matters
_FINAL_WORKER = ("stopped", LOST)


def agent_stale() -> float:
    """Seconds without a heartbeat before an agent is lost and its processors re-placed
    (``EC_AGENT_STALE``, 15 by default; agents and the CLI read the same variable)."""
    return float(os.environ.get("EC_AGENT_STALE", "15"))


def stale(heartbeat: dt.datetime | None, at: dt.datetime, bound: float) -> bool:
    """Is a heartbeat (none at all counts as stale) older than ``bound`` seconds at ``at``?"""
    return heartbeat is None or (at - heartbeat).total_seconds() > bound


def agent_state(status: str, heartbeat: dt.datetime | None, at: dt.datetime, bound: float) -> str:
    """An agent as shown: ``online`` only while its heartbeat is fresh; an agent that
    stopped cleanly stays ``offline``; one that went silent is ``lost``."""
    if status != "online":
        return status
    return LOST if stale(heartbeat, at, bound) else "online"


def worker_state(status: str, heartbeat: dt.datetime | None, at: dt.datetime, bound: float,
                 agent: str | None = None) -> str:
    """A worker as shown: its row's status while its heartbeat is fresh and its agent (if
    any, as shown by :func:`agent_state`) is not lost; ``lost`` otherwise. Workers exit
    with their agent, so a lost agent's workers are lost too, before their own heartbeats
    age."""
    if status in _FINAL_WORKER:
        return status
    if agent == LOST or stale(heartbeat, at, bound):
        return LOST
    return status


def live(state: str) -> bool:
    """Does a shown worker state count as serving capacity?"""
    return state == "running"


def node_state(wish: str, agents: list[str], busy: bool) -> str:
    """A node as shown, from the admin's ``wish`` (Node.state), its agents' shown states and
    whether work still runs there (placements or live workers).

    No online agent: ``lost`` if one of them went silent, ``offline`` if they all stopped
    (or none ever ran). Otherwise the wish: ``cordoned``; ``draining`` while work remains,
    then ``drained``; ``online``."""
    if "online" not in agents:
        return LOST if LOST in agents else "offline"
    if wish == "cordoned":
        return "cordoned"
    if wish == "draining":
        return "draining" if busy else "drained"
    return "online"
