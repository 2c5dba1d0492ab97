"""Plug logic is pure: cycles, triggers, fan-in slots, deterministic ids."""

from __future__ import annotations

import pytest

from ectool.plugs import (
    Edge,
    creates_cycle,
    fanin_arguments,
    fanin_call_id,
    plug_call_id,
    triggered,
)


@pytest.mark.parametrize("edges, source, target, cycle", [
    ([], "a", "b", None),
    ([], "a", "a", ["a", "a"]),
    ([Edge("p", "a", "b")], "b", "a", ["b", "a", "b"]),
    ([Edge("p", "a", "b"), Edge("q", "b", "c")], "c", "a", ["c", "a", "b", "c"]),
    ([Edge("p", "a", "b"), Edge("q", "b", "c")], "a", "c", None),  # a second path is no cycle
    ([Edge("p", "x", "y")], "a", "b", None),
])
def test_creates_cycle(edges, source, target, cycle):
    assert creates_cycle(edges, source, target) == cycle


def test_triggered_by_outcome_kind():
    edges = [Edge("r", "a", "b"), Edge("e", "a", "c", on="error"), Edge("o", "x", "b")]
    assert [e.name for e in triggered(edges, "a", "done")] == ["r"]
    assert [e.name for e in triggered(edges, "a", "failed")] == ["e"]
    assert [e.name for e in triggered(edges, "a", "dead")] == ["e"]


def test_fanin_arguments_and_ids():
    edges = [Edge("p", "a", "t", "y"), Edge("q", "b", "t", "x"), Edge("r", "c", "u")]
    assert fanin_arguments(edges, "t") == ["x", "y"] and fanin_arguments(edges, "u") == []
    assert plug_call_id("c1", "p") == plug_call_id("c1", "p") != plug_call_id("c2", "p")
    assert fanin_call_id("flow1", "t") != fanin_call_id("flow2", "t")
