"""Reconcile and placement are pure: table-driven tests."""

from __future__ import annotations

import pytest

from agentd.reconcile import Action, Candidate, Desired, plan_claims, reconcile, workers_wanted

A, B = "a" * 40, "b" * 40


@pytest.mark.parametrize("desired, actual, expected", [
    ({"p": Desired(2, "running", A)}, {}, [Action("start", "p", A, 2)]),
    ({"p": Desired(2, "running", A)}, {"p": {A: 2}}, []),
    ({"p": Desired(3, "running", A)}, {"p": {A: 1}}, [Action("start", "p", A, 2)]),
    ({"p": Desired(1, "running", A)}, {"p": {A: 3}}, [Action("stop", "p", A, 2)]),
    ({"p": Desired(2, "paused", A)}, {"p": {A: 2}}, [Action("stop", "p", A, 2)]),
    ({"p": Desired(2, "stopped", A)}, {"p": {A: 2}}, [Action("stop", "p", A, 2)]),
    ({}, {"p": {A: 1}}, [Action("stop", "p", A, 1)]),
    # update: new commit starts first, old workers drain after
    ({"p": Desired(2, "running", B)}, {"p": {A: 2}}, [Action("start", "p", B, 2), Action("stop", "p", A, 2)]),
    ({"p": Desired(2, "running", None)}, {}, []),  # not deployable yet: nothing to start
    ({"p": Desired(0, "running", A)}, {"p": {A: 1}}, [Action("stop", "p", A, 1)]),
    ({"p": Desired(1, "running", A), "q": Desired(1, "running", B)}, {"q": {B: 1}},
     [Action("start", "p", A, 1)]),
])
def test_reconcile(desired, actual, expected):
    assert reconcile(desired, actual) == expected


def cand(name, conc, host=None, placed=0, mine=0, ready=0):
    return Candidate(name, conc, host, placed, mine, ready)


@pytest.mark.parametrize("candidates, cpus, expected", [
    ([cand("p", 2)], 4, {"p": 2}),
    ([cand("p", 8)], 2, {"p": 2}),                       # never more than granted cores
    ([cand("p", 2, placed=2)], 4, {}),                   # fully placed on another agent
    ([cand("p", 3, placed=1)], 4, {"p": 2}),             # the rest of it
    ([cand("p", 1, host="elsewhere")], 4, {}),           # pinned to another host
    ([cand("p", 1, host="h1")], 4, {"p": 1}),            # pinned here (host name)
    ([cand("p", 1, host="agent-x")], 4, {"p": 1}),       # pinned here (agent name)
    ([cand("a", 2), cand("b", 2, host="h1")], 2, {"b": 2}),  # pinned first
    ([cand("a", 2, mine=2), cand("b", 2)], 3, {"a": 2, "b": 1}),  # keep what runs
])
def test_plan_claims(candidates, cpus, expected):
    assert plan_claims(candidates, "h1", "agent-x", cpus) == expected


@pytest.mark.parametrize("candidates, state, expected", [
    # cordoned: what runs stays, nothing new (not even a processor pinned here)
    ([cand("a", 2, mine=2), cand("b", 2)], "cordoned", {"a": 2}),
    ([cand("p", 1, host="h1")], "cordoned", {}),
    ([cand("a", 4, mine=1)], "cordoned", {"a": 1}),               # no growth either
    # draining: nothing new; keep what runs until replacements serve elsewhere
    ([cand("b", 2)], "draining", {}),
    ([cand("a", 2, mine=2)], "draining", {"a": 2}),               # nowhere else yet
    ([cand("a", 2, mine=2, ready=1)], "draining", {"a": 1}),      # one replaced
    ([cand("a", 2, mine=2, ready=2)], "draining", {}),            # all replaced: released
    ([cand("a", 4, mine=2, placed=2, ready=3)], "draining", {"a": 1}),
    ([cand("p", 1, host="h1", mine=1)], "draining", {}),          # pinned here: stops, waits for uncordon
    ([cand("p", 1, host="agent-x", mine=1)], "draining", {}),
])
def test_plan_claims_on_cordoned_and_draining_nodes(candidates, state, expected):
    assert plan_claims(candidates, "h1", "agent-x", 4, state) == expected


@pytest.mark.parametrize("concurrency, sockets, expected", [
    (1, [], 1),          # no sockets yet: the processor's own concurrency
    (1, [5, 8], 8),      # the seed's network: do_this -c 8 runs 8 calls at once
    (4, [2, 1], 4),      # the processor asks for more than any socket
    (2, [2], 2),
])
def test_workers_wanted(concurrency, sockets, expected):
    """A socket's -c is how many of its calls run at once: one worker (core) each."""
    assert workers_wanted(concurrency, sockets) == expected


@pytest.mark.parametrize("requested, fatal, deploy_error, running, idle, expected", [
    ("running", None, None, True, False, ("running", None)),
    ("running", None, None, False, True, ("running", None)),     # deployed, no sockets yet
    ("running", None, None, False, False, None),                 # starting: left as it is
    ("running", "crashed 5 times", None, True, False, ("error", "crashed 5 times")),
    ("running", None, "repository not trusted", False, False, ("error", "repository not trusted")),
    ("running", "crashed", "cannot clone", False, False, ("error", "crashed")),  # crashes first
    ("paused", None, None, False, False, ("paused", None)),
    ("stopped", None, None, True, False, ("stopped", None)),
    ("paused", None, "cannot clone", False, False, ("error", "cannot clone")),
])
def test_observed_status(requested, fatal, deploy_error, running, idle, expected):
    from agentd.reconcile import observed_status

    assert observed_status(requested, fatal, deploy_error, running, idle) == expected
