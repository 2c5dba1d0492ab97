"""Schedules fired by real agents (``ec agent run``, several on one machine with their own
--node and EC_HOME): every tick exactly once while agents are killed with kill -9 and
restarted, and each catch-up policy after all agents were down. Checked from the store."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from ectool.schedule_math import GRACE
from helpers import agent, ec, ec_all, env_for, host_envs, kill_host, make_repo, wait_for


@pytest.fixture
def hosts(tmp_path, request):
    """(env, host_env, db): a store (SQLite, or PostgreSQL when the test asks for db_url)
    and an embedded broker with processor p1 (socket pid)."""
    db = request.getfixturevalue("db_url") if "db_url" in request.fixturenames else f"sqlite:///{tmp_path / 'ec.db'}"
    env = env_for(db, f"sqlite:///{tmp_path / 'queue.db'}", EC_AGENT_STALE="3")
    repo = make_repo(tmp_path / "repo")
    ec_all(env, ("add", "queue", "-n", "q"), ("trust", "add", str(repo)),
           ("add", "processor", "-n", "p1", "-g", str(repo), "-m", "pyfi.processors.sample"),
           ("add", "socket", "-n", "pid", "-q", "q", "-pn", "p1", "-t", "whoami"))

    host_env = host_envs(tmp_path, env)
    return env, host_env, db


def ticks(db: str, name: str) -> list:
    from ectool.store import open_store
    from ectool.store.schedules import Schedule, ScheduleTick

    open_store(db)
    row = Schedule.get(Schedule.name == name)
    return list(ScheduleTick.select().where(ScheduleTick.schedule == row.id).order_by(ScheduleTick.tick))


def next_tick(db: str, name: str) -> dt.datetime:
    from ectool.store import open_store
    from ectool.store.schedules import Schedule

    open_store(db)
    return Schedule.get(Schedule.name == name).next_tick


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def on_time(rows) -> list:
    return [r for r in rows if r.claimed - r.tick <= GRACE]


def contiguous(rows, every=dt.timedelta(seconds=1)) -> bool:
    return all(b.tick - a.tick == every for a, b in zip(rows, rows[1:], strict=False))


@pytest.mark.slow
def test_every_tick_fires_once_while_agents_are_killed(hosts):
    """Three agents, a 1 s schedule for 60 s; every few ticks one agent is killed with
    kill -9 and restarted. Every tick of the window has one row, fired (catch-up all), with
    one call that ran to done."""
    loss_check(*hosts)


@pytest.mark.slow
def test_every_tick_fires_once_while_agents_are_killed_on_postgresql(hosts, db_url):
    if not db_url.startswith("postgres"):
        pytest.skip("the SQLite store runs in the test above")
    loss_check(*hosts)


def loss_check(env, host_env, db) -> None:
    done = ec("add", "schedule", "-n", "beat", "--socket", "pid", "--every", "1s", "--catch-up", "all", env=env)
    assert done.returncode == 0, done.stderr
    rng = random.Random(18)
    names = ["a1", "a2", "a3"]
    ctxs = {n: agent(host_env(n), "--name", n, "--node", n, "--cpus", "1") for n in names}
    procs = {n: ctx.__enter__() for n, ctx in ctxs.items()}
    kills = 0
    try:
        start = utcnow()
        while utcnow() - start < dt.timedelta(seconds=60):
            victim = rng.choice(names)
            kill_host(procs[victim])
            ctxs[victim].__exit__(None, None, None)
            kills += 1
            wait_for(lambda n=len(ticks(db, "beat")): len(ticks(db, "beat")) >= n + 2, timeout=30,
                     what="ticks firing with an agent down")
            ctxs[victim] = agent(host_env(victim), "--name", victim, "--node", victim, "--cpus", "1")
            procs[victim] = ctxs[victim].__enter__()
            wait_for(lambda n=len(ticks(db, "beat")): len(ticks(db, "beat")) >= n + 2, timeout=30,
                     what="ticks firing after a restart")
        end = utcnow()
        wait_for(lambda: next_tick(db, "beat") > end + dt.timedelta(seconds=1), timeout=30,
                 what="the window's ticks handled")
        rows = [r for r in ticks(db, "beat") if r.tick <= end]
        assert len(rows) >= 55 and contiguous(rows), [r.tick for r in rows]
        assert {r.status for r in rows} == {"fired"}
        assert len({r.call for r in rows}) == len(rows)
        wait_for(lambda: all(r.published for r in ticks(db, "beat") if r.tick <= end), timeout=40,
                 what="every claimed tick published")
        ids = [r.call for r in rows]
        out = ec("wait", *ids, "--timeout", "120", env=env, timeout=180)
        assert out.returncode == 0, out.stderr
        one = json.loads(ec("show", "call", ids[0], "--json", env=env).stdout)
        assert one["status"] == "done" and one["flow"].startswith("schedule:beat@")
        assert kills >= 10
    finally:
        for ctx in ctxs.values():
            ctx.__exit__(None, None, None)


def test_downtime_each_catch_up_policy_on_both_stores(hosts, db_url):
    """One agent fires three 1 s schedules (skip, one, all); it stops for over 10 ticks and
    comes back: all fires every missed tick, one only the latest late one, skip none of
    the late ones (recorded missed); the on-time ticks fire under every policy."""
    env, host_env, db = hosts
    for policy in ("skip", "one", "all"):
        done = ec("add", "schedule", "-n", policy, "--socket", "pid", "--every", "1s", "--catch-up", policy,
                  env=env)
        assert done.returncode == 0, done.stderr
    with agent(host_env("n1"), "--name", "a1", "--node", "n1"):
        wait_for(lambda: all(len(ticks(db, p)) >= 3 for p in ("skip", "one", "all")), what="first ticks")
    stopped = utcnow()
    wait_for(lambda: utcnow() > stopped + dt.timedelta(seconds=12), timeout=20, what="12 ticks of downtime")
    restarted = utcnow()
    with agent(host_env("n1"), "--name", "a1", "--node", "n1"):
        wait_for(lambda: all(next_tick(db, p) > restarted + dt.timedelta(seconds=2)
                             for p in ("skip", "one", "all")), what="the downtime's ticks handled")
    for policy in ("skip", "one", "all"):
        rows = ticks(db, policy)
        assert contiguous(rows), (policy, [r.tick for r in rows])
        down = [r for r in rows if stopped < r.tick < restarted]
        assert len(down) >= 10
        missed = [r for r in down if r.status == "missed"]
        if policy == "all":
            assert missed == []
        else:
            # the missed ones are the oldest of the downtime, over the 5 s grace
            assert missed and missed == down[:len(missed)] and len(missed) >= 4, (policy, len(missed))
        late_fired = [r for r in down if r.status == "fired" and r.claimed - r.tick > GRACE]
        if policy == "one":
            assert late_fired == [down[len(missed)]]
        else:
            assert len(late_fired) == (0 if policy == "skip" else len(down) - len(on_time(down)))
