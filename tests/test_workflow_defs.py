"""Named workflows' pure halves: compose nodes to engine plans and back, a schedule's
arguments into a plan's first calls, and the derived grace of a tick."""

from __future__ import annotations

import datetime as dt

import pytest

from ectool.errors import UsageError
from ectool.schedule_math import GRACE, GRACE_MAX, Spec, grace_of
from ectool.workflow_defs import sockets, to_plan, to_spec, with_input


def call(socket, *args, **kwargs):
    return {"t": "call", "socket": socket, "args": list(args), "kwargs": kwargs}


@pytest.mark.parametrize("spec, plan", [
    ("a", call("a")),
    ({"socket": "a", "args": [1], "kwargs": {"k": 2}}, call("a", 1, k=2)),
    ({"pipeline": ["a", "b"]}, {"t": "pipe", "steps": [call("a"), call("b")]}),
    ({"parallel": []}, {"t": "par", "members": []}),
    ({"funnel": ["a", {"socket": "b", "args": [3]}], "final": "c"},
     {"t": "pipe", "steps": [{"t": "par", "members": [call("a"), call("b", 3)]}, call("c")], "label": "funnel"}),
    ({"pipeline": [{"parallel": ["a", {"pipeline": ["b", "c"]}]}, "d"]},
     {"t": "pipe", "steps": [{"t": "par", "members": [call("a"), {"t": "pipe", "steps": [call("b"), call("c")]}]},
                             call("d")]}),
])
def test_to_plan_and_back(spec, plan):
    assert to_plan(spec) == plan
    assert to_spec(plan) == spec


@pytest.mark.parametrize("spec, message", [
    ({}, "workflow: give exactly one of socket, pipeline, parallel, funnel"),
    ({"pipeline": "a"}, "workflow: pipeline must be a list"),
    ({"pipeline": []}, "a pipeline needs at least one step"),
    ({"funnel": ["a"]}, "a funnel needs a final step"),
    ({"pipeline": ["a", {"socket": ""}]}, "workflow.pipeline[1]: socket must be a socket's name"),
    ({"socket": "a", "args": {"x": 1}}, "args must be a list and kwargs a table"),
    ({"parallel": ["a", None]}, "workflow.parallel[1]: expected a socket's name or a table"),
    ({"parallel": [{"socket": "a", "pipeline": ["b"]}]}, "give exactly one of"),
])
def test_malformed_nodes(spec, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        to_plan(spec)


def test_too_deep():
    spec: object = "a"
    for _ in range(70):
        spec = {"pipeline": [spec]}
    with pytest.raises(UsageError, match="nested too deeply"):
        to_plan(spec)


def test_a_schedules_arguments_go_to_the_first_calls_only():
    plan = to_plan({"pipeline": [{"parallel": [{"socket": "a", "args": [1]}, "b"]}, {"socket": "c", "args": [9]}]})
    got = with_input(plan, [100], {"k": 1})
    members = got["steps"][0]["members"]
    assert members == [call("a", 100, 1, k=1), call("b", 100, k=1)]
    assert got["steps"][1] == call("c", 9)
    assert plan["steps"][0]["members"][0] == call("a", 1)  # the stored plan is left alone
    assert with_input(plan, [], {}) is plan
    assert sockets(plan) == ["a", "b", "c"]


T = dt.datetime(2026, 1, 1)


@pytest.mark.parametrize("spec, override, expected", [
    (Spec(every=1, anchor=T), None, GRACE),                              # at least 5 s
    (Spec(every=30, anchor=T), None, GRACE),
    (Spec(every=600, anchor=T), None, dt.timedelta(minutes=1)),          # a tenth
    (Spec(every=3600, anchor=T), None, dt.timedelta(minutes=6)),
    (Spec(every=86400, anchor=T), None, GRACE_MAX),                      # at most an hour
    (Spec(every=86400, anchor=T), 30.0, dt.timedelta(seconds=30)),       # the schedule's own
    (Spec(every=1, anchor=T), 0.0, dt.timedelta(0)),
])
def test_grace_of(spec, override, expected):
    assert grace_of(T, spec.next(T), override) == expected


def test_a_nightly_tick_fired_after_a_restart_is_not_missed():
    from ectool.schedule_math import decide

    daily = Spec(every=86400, anchor=T)
    ten_minutes_late = T + dt.timedelta(minutes=10)
    assert decide(daily, T, ten_minutes_late, "skip").fire == [T]
    assert decide(daily, T, ten_minutes_late, "skip", grace=60).missed == [T]
