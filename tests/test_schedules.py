"""Schedules: bad input, the CLI's life cycle, and firing exactly once per tick (in
process against real stores, then with real agents in tests/test_schedule_agents.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from ectool.cli import cli

NET = [
    ["add", "queue", "-n", "q"],
    ["add", "processor", "-n", "p", "-g", "https://example.invalid/p.git", "-m", "m"],
    ["add", "socket", "-n", "s", "-q", "q", "-pn", "p", "-t", "t"],
]


def invoke(db_url: str, *args: str):
    return CliRunner().invoke(cli, ["--db", db_url, *args])


@pytest.fixture
def net(db_url):
    for args in NET:
        assert invoke(db_url, *args).exit_code == 0
    return db_url


@pytest.mark.parametrize("args, message", [
    (["--cron", "61 * * * *"], "out of range"),
    (["--cron", "* * *"], "expected 5 fields (minute hour day-of-month month day-of-week), got 3"),
    (["--every", "0"], "must be positive"),
    (["--every", "-5s"], "must be positive"),
    (["--every", "soon"], "invalid interval"),
    (["--every", "1s", "--timezone", "Mars/Olympus"], "unknown time zone"),
    (["--every", "1s", "--socket", "nope"], "unknown socket"),
    ([], "exactly one of"),
    (["--every", "1s", "--cron", "* * * * *"], "exactly one of"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(net, args, message):
    argv = ["add", "schedule", "-n", "bad", *args]
    if "--socket" not in args:
        argv += ["--socket", "s"]
    result = invoke(net, *argv)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert json.loads(invoke(net, "ls", "schedules", "--json").stdout) == []


def test_life_cycle(net):
    assert invoke(net, "add", "schedule", "-n", "nightly", "--socket", "s", "--cron", "30 2 * * *",
                  "--tz", "Europe/Berlin", "--data", "[1, 2]").exit_code == 0
    assert invoke(net, "add", "schedule", "-n", "fast", "--socket", "s", "--every", "10s", "3", "x",
                  "--catch-up", "all").exit_code == 0
    rows = {r["name"]: r for r in json.loads(invoke(net, "ls", "schedules", "--json").stdout)}
    assert rows["fast"]["every"] == 10 and rows["fast"]["args"] == {"args": [3, "x"], "kwargs": {}}
    assert rows["nightly"]["cron"] == "30 2 * * *" and rows["nightly"]["args"]["args"] == [1, 2]
    shown = json.loads(invoke(net, "show", "schedule", "nightly", "--json").stdout)
    assert len(shown["next_ticks"]) == 5
    # 02:30 Berlin is 00:30 or 01:30 UTC (summer or winter time), every day
    assert all(t[11:16] in ("00:30", "01:30") for t in shown["next_ticks"])
    assert invoke(net, "update", "schedule", "fast", "every=1m").exit_code == 0
    assert invoke(net, "update", "schedule", "fast", "every=0").exit_code == 2
    assert invoke(net, "schedule", "pause", "fast").exit_code == 0
    assert json.loads(invoke(net, "show", "schedule", "fast", "--json").stdout)["paused"] is True
    assert invoke(net, "schedule", "resume", "fast").exit_code == 0
    fast = json.loads(invoke(net, "show", "schedule", "fast", "--json").stdout)
    assert fast["paused"] is False and fast["every"] == 60 and fast["next_ticks"]
    assert invoke(net, "delete", "schedule", "fast").exit_code == 0
    assert [r["name"] for r in json.loads(invoke(net, "ls", "schedules", "--json").stdout)] == ["nightly"]
    assert invoke(net, "show", "schedule", "fast").exit_code == 2


def test_python_api_lists_and_pauses(net, monkeypatch, tmp_path):
    from ectool import api, schedules

    monkeypatch.setenv("EC_DB", net)
    monkeypatch.setenv("EC_BROKER", f"sqlite:///{tmp_path / 'queue.db'}")

    s = api.Schedule(name="api", socket="s", every="10m")
    assert [r["name"] for r in api.schedules()] == ["api"]
    s.pause()
    assert schedules.show("api")["paused"] is True
    s.resume()
    assert schedules.show("api")["paused"] is False
    api.close()


# -- firing, in process: several "agents" (fire_due callers) on one store and broker ----------

@pytest.fixture
def firing(tmp_path, db_url):
    from ectool.publisher import Publisher
    from ectool.store import open_store
    from ectool.transport import connect

    for args in NET:
        assert invoke(db_url, *args).exit_code == 0
    open_store(db_url)
    transport = connect(f"sqlite:///{tmp_path / 'queue.db'}")
    yield Publisher(transport)
    transport.close()


def _ticks(name):
    from ectool.store.schedules import Schedule, ScheduleTick

    row = Schedule.get(Schedule.name == name)
    return row, list(ScheduleTick.select().where(ScheduleTick.schedule == row.id).order_by(ScheduleTick.tick))


@pytest.mark.parametrize("policy", ["skip", "one", "all"])
def test_every_tick_once_whoever_fires_and_catch_up(firing, policy):
    """Three callers fire the same window in turn and again (retries): each tick has one row
    and one call whose id derives from it; after a 20 s outage the policy decides."""
    from ectool import scheduler, schedules
    from ectool.store.models import Call

    schedules.add("tick", "s", every="1s", catch_up=policy, args=[7])
    row, _ = _ticks("tick")
    start = row.next_tick
    for second in range(0, 5):  # on time: every agent's round fires what is due
        for agent in ("a1", "a2", "a3"):
            scheduler.fire_due(firing, agent, at=start + dt.timedelta(seconds=second, milliseconds=100))
    _, ticks = _ticks("tick")
    assert [t.tick for t in ticks] == [start + dt.timedelta(seconds=i) for i in range(5)]
    assert all(t.status == "fired" and t.published for t in ticks)
    assert [t.call for t in ticks] == [scheduler.tick_call_id(row.id, t.tick) for t in ticks]
    calls = list(Call.select().where(Call.flow.startswith("schedule:tick@")))
    assert sorted(c.id for c in calls) == sorted(t.call for t in ticks)
    assert json.loads(calls[0].args) == {"args": [7], "kwargs": {}}
    # every agent down for 20 ticks, then two come back
    back = start + dt.timedelta(seconds=24, milliseconds=500)
    scheduler.fire_due(firing, "a2", at=back)
    scheduler.fire_due(firing, "a3", at=back)
    _, ticks = _ticks("tick")
    assert [t.tick for t in ticks] == [start + dt.timedelta(seconds=i) for i in range(25)]  # each handled once
    fired = [t.tick - start for t in ticks if t.status == "fired"]
    late = [dt.timedelta(seconds=i) for i in range(5, 20)]  # over the 5 s grace at `back`
    on_time = [dt.timedelta(seconds=i) for i in range(20, 25)]
    expected = {"all": late + on_time, "one": late[-1:] + on_time, "skip": on_time}[policy]
    assert fired == [dt.timedelta(seconds=i) for i in range(5)] + expected
    assert Call.select().where(Call.flow.startswith("schedule:tick@")).count() == len(fired)


def test_a_claimed_tick_whose_publish_failed_is_published_later(firing, monkeypatch):
    from ectool import scheduler, schedules
    from ectool.errors import Unreachable

    schedules.add("tick", "s", every="1s")
    row, _ = _ticks("tick")
    real = firing.publish

    def broken(*_a, **_k):
        raise Unreachable("broker down")

    monkeypatch.setattr(firing, "publish", broken)
    scheduler.fire_due(firing, "a1", at=row.next_tick)
    _, ticks = _ticks("tick")
    assert len(ticks) == 1 and not ticks[0].published
    monkeypatch.setattr(firing, "publish", real)
    scheduler.fire_due(firing, "a2", at=row.next_tick)  # too soon: its claimer may still publish
    assert not _ticks("tick")[1][0].published
    monkeypatch.setattr(scheduler, "REPUBLISH_AFTER", dt.timedelta(0))
    scheduler.fire_due(firing, "a2", at=row.next_tick + dt.timedelta(milliseconds=1))
    tick = _ticks("tick")[1][0]
    assert tick.published
    assert firing.transport.depth(firing.target("s").queue) == 1


def test_compose_applies_and_exports_schedules(net):
    from ectool import compose

    doc = compose.parse('''
[[schedule]]
name = "nightly"
socket = "s"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
args = [1, "two"]
kwargs = {flag = true}

[[schedule]]
name = "fast"
socket = "s"
every = "10s"
catch_up = "all"
''')
    assert compose.apply(doc)["created"] == ["schedule nightly", "schedule fast"]
    again = compose.apply(compose.parse(compose.export()))
    assert again["created"] == [] and again["updated"] == []
    assert "schedule nightly" in again["unchanged"]
    rows = {r["name"]: r for r in json.loads(invoke(net, "ls", "schedules", "--json").stdout)}
    assert rows["nightly"]["args"] == {"args": [1, "two"], "kwargs": {"flag": True}}
    assert rows["fast"]["every"] == 10 and rows["fast"]["catch_up"] == "all"
    bad = compose.parse('[[schedule]]\nname = "b"\nsocket = "s"\nevery = "0s"\n')
    with pytest.raises(Exception, match="must be positive"):
        compose.apply(bad)


def test_stats_show_next_tick_lateness_and_counts(firing, db_url):
    from ectool import scheduler, schedules

    schedules.add("tick", "s", every="1s", catch_up="skip")
    row, _ = _ticks("tick")
    scheduler.fire_due(firing, "a1", at=row.next_tick + dt.timedelta(seconds=20))  # 15 late: missed
    out = invoke(db_url, "stats", "--schedules")
    assert out.exit_code == 0, out.output
    header, line = out.stdout.splitlines()[-2:]
    got = dict(zip(header.split("\t"), line.split("\t"), strict=True))
    assert (got["schedule"], got["fired"], got["missed"], got["failed"]) == ("tick", "6", "15", "0")


def test_dash_flow_tab_shows_schedules(tmp_path):
    import asyncio

    from textual.widgets import DataTable

    from ectool import network, schedules
    from ectool.config import load
    from ectool.dash import make_app
    from ectool.store import open_store

    config = load(db=f"sqlite:///{tmp_path / 'ec.db'}", broker=f"sqlite:///{tmp_path / 'queue.db'}")
    open_store(config.db)
    network.add_queue("q")
    network.add_processor("p", "file:///nowhere", "m")
    network.add_socket("s", "q", "p", "t")
    schedules.add("nightly", "s", cron="0 2 * * *")

    async def scenario():
        app = make_app(config, refresh=0.5, follow=False)
        async with app.run_test(size=(120, 40)) as pilot:
            while app.loads == 0:
                await pilot.pause(0.05)
            row = app.query_one("#flow-table", DataTable).get_row_at(0)
            assert row[0] == "schedule nightly" and row[1].startswith("next 02:00") and row[3] == "s"
            assert "missed 0" in row[4]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_concurrent_agents_claim_each_tick_once(firing):
    """Three threads (each its own store connection) fire the same due ticks at once."""
    import threading

    from ectool import scheduler, schedules
    from ectool.store.models import Call

    schedules.add("tick", "s", every="1s", catch_up="all")
    row, _ = _ticks("tick")
    start = row.next_tick
    barrier = threading.Barrier(3)
    errors = []

    def agent(name):
        try:
            for second in range(10):
                barrier.wait(30)
                scheduler.fire_due(firing, name, at=start + dt.timedelta(seconds=second, milliseconds=500))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=agent, args=(f"a{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    _, ticks = _ticks("tick")
    assert [t.tick for t in ticks] == [start + dt.timedelta(seconds=i) for i in range(10)]
    assert Call.select().where(Call.flow.startswith("schedule:tick@")).count() == 10
    assert firing.transport.depth(firing.target("s").queue) == 10


def test_fired_and_missed_ticks_emit_events(firing, monkeypatch):
    from ectool import scheduler, schedules

    seen = []
    monkeypatch.setattr(scheduler.events, "emit", lambda kind, **f: seen.append((kind, f)))
    schedules.add("tick", "s", every="1s", catch_up="skip")
    row, _ = _ticks("tick")
    scheduler.fire_due(firing, "a1", at=row.next_tick + dt.timedelta(seconds=7))
    kinds = [k for k, _ in seen]
    assert kinds == ["schedule.missed", "schedule.missed"] + ["schedule.fired"] * 6, kinds
    fired = [f for k, f in seen if k == "schedule.fired"]
    assert {f["schedule"] for f in fired} == {"tick"} and all(f["socket"] == "s" and f["call"] for f in fired)
