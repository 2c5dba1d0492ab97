"""Restart with backoff is pure: table-driven tests of one child's life."""

from __future__ import annotations

import pytest

from ectool.backoff import BACKOFF, FATAL, RUNNING, STARTING, Backoff


def replay(life: Backoff, events: list[tuple[str, float]]) -> list[tuple[str, float | None]]:
    """Feed ("start"|"exit"|"look", t) events; record (state, delay of an exit or None)."""
    seen: list[tuple[str, float | None]] = []
    for event, t in events:
        delay = life.exit(t) if event == "exit" else None
        if event == "start":
            life.start(t)
        seen.append((life.state(t), delay))
    return seen


@pytest.mark.parametrize("max_tries, events, expected", [
    # STARTING -> RUNNING once it has stayed up `healthy` seconds
    (None, [("start", 0), ("look", 10), ("look", 31)], [(STARTING, None), (STARTING, None), (RUNNING, None)]),
    # quick exits back off exponentially
    (None, [("start", 0), ("exit", 1), ("start", 2), ("exit", 3), ("start", 4), ("exit", 5)],
     [(STARTING, None), (BACKOFF, 0.5), (STARTING, None), (BACKOFF, 1.0), (STARTING, None), (BACKOFF, 2.0)]),
    # a child that stayed up `healthy` seconds starts its count again
    (None, [("start", 0), ("exit", 1), ("start", 2), ("exit", 100)],
     [(STARTING, None), (BACKOFF, 0.5), (STARTING, None), (BACKOFF, 0.5)]),
    # BACKOFF -> FATAL after max_tries quick exits in a row
    (2, [("start", 0), ("exit", 1), ("start", 2), ("exit", 3)],
     [(STARTING, None), (BACKOFF, 0.5), (STARTING, None), (FATAL, 1.0)]),
    (2, [("start", 0), ("exit", 1), ("start", 2), ("exit", 40)],
     [(STARTING, None), (BACKOFF, 0.5), (STARTING, None), (BACKOFF, 0.5)]),
])
def test_states(max_tries, events, expected):
    assert replay(Backoff(max_tries=max_tries), events) == expected


@pytest.mark.parametrize("max_tries, exit_at, now, due", [
    (None, 1, 1.2, False),   # 0.5 s of backoff not over yet
    (None, 1, 1.5, True),
    (1, 1, 100, False),      # fatal: never restarted
])
def test_due(max_tries, exit_at, now, due):
    life = Backoff(max_tries=max_tries)
    life.start(0)
    life.exit(exit_at)
    assert life.due(now) is due


def test_running_child_is_not_due():
    life = Backoff()
    life.start(0)
    assert not life.due(100)
