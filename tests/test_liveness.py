"""The liveness rule is pure: what a worker, an agent or a node is shown as (table-tested)."""

from __future__ import annotations

import datetime as dt

import pytest

from agentd.reconcile import drain_keep
from ectool.liveness import agent_state, node_state, worker_state

AT = dt.datetime(2026, 1, 1, 12, 0, 0)


def ago(seconds: float) -> dt.datetime:
    return AT - dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("status, heartbeat, expected", [
    ("online", ago(1), "online"),
    ("online", ago(14.9), "online"),
    ("online", ago(15.1), "lost"),        # killed -9, or its host gone: the row still says online
    ("online", None, "lost"),
    ("offline", ago(600), "offline"),     # stopped cleanly: not lost
    ("offline", ago(1), "offline"),
    ("lost", ago(600), "lost"),           # marked by the agent that re-placed its work
])
def test_agent_state(status, heartbeat, expected):
    assert agent_state(status, heartbeat, AT, 15.0) == expected


@pytest.mark.parametrize("status, heartbeat, agent, expected", [
    ("running", ago(5), "online", "running"),
    ("running", ago(5), None, "running"),       # ec worker: no agent, the heartbeat decides
    ("running", ago(31), None, "lost"),         # minutes-old heartbeat: never shown running
    ("running", ago(31), "online", "lost"),
    ("running", ago(5), "lost", "lost"),        # its agent is lost: so is it, before its own beat ages
    ("running", ago(5), "offline", "running"),  # an agent stopping: its workers stop on their own
    ("running", None, None, "lost"),
    ("starting", ago(40), None, "lost"),
    ("stopped", ago(4000), "lost", "stopped"),  # final statuses stay what they are
    ("stopped", ago(4000), None, "stopped"),
    ("lost", ago(1), "online", "lost"),
])
def test_worker_state(status, heartbeat, agent, expected):
    assert worker_state(status, heartbeat, AT, 30.0, agent) == expected


@pytest.mark.parametrize("wish, agents, busy, expected", [
    ("schedulable", ["online"], True, "online"),
    ("schedulable", ["online", "lost"], True, "online"),
    ("schedulable", ["lost"], False, "lost"),        # no live agent, one went silent
    ("schedulable", ["offline"], False, "offline"),  # its agents stopped cleanly
    ("schedulable", [], False, "offline"),           # added for planning, no agent yet
    ("cordoned", ["online"], True, "cordoned"),
    ("cordoned", ["lost"], True, "lost"),            # being lost matters more than the wish
    ("draining", ["online"], True, "draining"),
    ("draining", ["online"], False, "drained"),
    ("draining", ["offline"], False, "offline"),
])
def test_node_state(wish, agents, busy, expected):
    assert node_state(wish, agents, busy) == expected


@pytest.mark.parametrize("concurrency, mine, ready, keep", [
    (2, 2, 0, 2),   # no replacement yet: keep serving
    (2, 2, 1, 1),   # one replacement serves: one old worker may stop
    (2, 2, 2, 0),   # all replaced: release
    (4, 2, 2, 2),   # others run their share already, the replacements of mine are not there yet
    (4, 2, 3, 1),
    (2, 2, 5, 0),
    (3, 0, 0, 0),   # nothing of it here
])
def test_drain_keep(concurrency, mine, ready, keep):
    assert drain_keep(concurrency, mine, ready) == keep
