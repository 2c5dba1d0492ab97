"""Reconcile: compare what the store asks of this agent with what runs, emit actions.

Pure functions, table-tested (tests/test_reconcile.py). The agent executes the actions in
order: new workers start before old ones drain, so an update never leaves a gap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Desired:
    """What the store asks: ``workers`` processes at ``commit`` in ``state``."""

    workers: int
    state: str  # running | paused | stopped
    commit: str | None  # None: not deployed yet (or deployment failed)


@dataclass(frozen=True)
class Action:
    kind: str  # start | stop
    processor: str
    commit: str | None
    count: int


def reconcile(desired: dict[str, Desired], actual: dict[str, dict[str, int]]) -> list[Action]:
    """Actions turning ``actual`` (processor -> {commit: live workers}) into ``desired``."""
    actions: list[Action] = []
    for name in sorted(set(desired) | set(actual)):
        want = desired.get(name)
        have = {c: n for c, n in actual.get(name, {}).items() if n > 0}
        target = want.commit if want and want.state == "running" and want.workers > 0 else None
        if target is not None and want is not None:
            missing = want.workers - have.get(target, 0)
            if missing > 0:
                actions.append(Action("start", name, target, missing))
            elif missing < 0:
                actions.append(Action("stop", name, target, -missing))
        for commit, count in sorted(have.items(), key=lambda kv: str(kv[0])):
            if commit != target:
                actions.append(Action("stop", name, commit, count))
    return actions


def observed_status(requested: str, fatal: str | None, deploy_error: str | None,
                    running: bool, idle: bool) -> tuple[str, str | None] | None:
    """The status (and reason) an agent reports for a processor it serves after a
    reconcile, or None to leave it as it is. ``fatal``: why its workers keep crashing;
    ``deploy_error``: why it cannot deploy; ``running``: workers of it run here; ``idle``:
    deployed but it has no sockets yet (nothing to run, yet it is up)."""
    if fatal or deploy_error:
        return "error", fatal or deploy_error
    if requested == "running" and (running or idle):
        return "running", None
    if requested in ("paused", "stopped"):
        return requested, None
    return None


def workers_wanted(concurrency: int, sockets: list[int]) -> int:
    """Worker processes a processor asks for: its own concurrency, or more if one of its
    sockets asks for more. A socket's concurrency is how many of its calls run at once,
    and each worker process (one core) runs one call at a time."""
    return max([concurrency, *sockets])


@dataclass(frozen=True)
class Candidate:
    """A processor an agent might run: ``placed`` workers already run on other live agents
    (not counting draining nodes), ``mine`` on this one, and ``ready`` workers serve it now
    off draining nodes (only looked at when this agent's node drains)."""

    name: str
    concurrency: int
    host: str | None
    placed: int
    mine: int
    ready: int = 0


def plan_claims(candidates: list[Candidate], host: str, agent_name: str, cpus: int,
                state: str = "schedulable") -> dict[str, int]:
    """How many workers of each processor this agent should run (micro-scheduling).

    Pinned processors (``host``) run only on their host (matched against the host name or
    the agent name); the rest are shared out. An agent keeps what it already runs, then
    fills free cores, never exceeding ``cpus`` in total or a processor's concurrency.

    ``state`` is this agent's node's (Node.state): a ``cordoned`` node keeps what runs and
    takes nothing new; a ``draining`` one takes nothing new and keeps a floating
    processor's workers only while the ones ``ready`` elsewhere fall short of its
    concurrency (make-before-break: the old ones stop as the replacements serve). A
    processor pinned here has nowhere else to go: it is released and waits for uncordon.
    """
    eligible = [c for c in candidates if c.host in (None, "", host, agent_name)]
    if state == "draining":
        return {c.name: k for c in eligible
                if not c.host and (k := drain_keep(c.concurrency, c.mine, c.ready)) > 0}
    plan: dict[str, int] = {}
    free = cpus
    # keep existing placements first (stability), pinned before floating
    for c in sorted(eligible, key=lambda c: (c.host is None, c.name)):
        keep = min(c.mine, max(0, c.concurrency - c.placed), free)
        if keep:
            plan[c.name] = keep
            free -= keep
    if state == "cordoned":
        return plan
    for c in sorted(eligible, key=lambda c: (c.host is None, c.name)):
        want = c.concurrency - c.placed - plan.get(c.name, 0)
        take = min(want, free)
        if take > 0:
            plan[c.name] = plan.get(c.name, 0) + take
            free -= take
    return plan


def drain_keep(concurrency: int, mine: int, ready: int) -> int:
    """Workers a draining agent keeps of ``mine``: as many as the ``ready`` replacements
    still leave short of ``concurrency``."""
    return min(mine, max(0, concurrency - ready))
