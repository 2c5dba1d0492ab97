"""Schedules that start a named workflow (compose's [[workflow]]): bad input, compose,
listing a schedule's calls, claiming each tick's workflow once however many schedulers
race, the republish path, and real workers finishing the workflow a tick started."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from click.testing import CliRunner

from ectool.cli import cli
from helpers import sample_network, wait_for, workers

NET = [
    ["add", "queue", "-n", "q"],
    ["add", "processor", "-n", "p", "-g", "https://example.invalid/p.git", "-m", "m"],
    ["add", "socket", "-n", "a", "-q", "q", "-pn", "p", "-t", "t"],
    ["add", "socket", "-n", "b", "-q", "q", "-pn", "p", "-t", "t"],
]
FUNNEL = '''
[[workflow]]
name = "fan"
funnel = [{socket = "a", args = [1]}, "b"]
final = "a"
'''


def invoke(db_url: str, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--db", db_url, *args], input=input)


@pytest.fixture
def net(db_url):
    for args in NET:
        assert invoke(db_url, *args).exit_code == 0
    assert invoke(db_url, "compose", "apply", "-", input=FUNNEL).exit_code == 0
    return db_url


@pytest.mark.parametrize("args, message", [
    (["--workflow", "nope"], "unknown workflow 'nope'"),
    (["--workflow", "fan", "--socket", "a"], "exactly one of --socket SOCKET or --workflow WORKFLOW"),
    ([], "exactly one of --socket SOCKET or --workflow WORKFLOW"),
    (["--workflow", "fan", "--grace", "-1s"], "must not be negative"),
])
def test_bad_target_is_one_line_exit_2_and_nothing_stored(net, args, message):
    result = invoke(net, "add", "schedule", "-n", "bad", "--every", "1m", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert json.loads(invoke(net, "ls", "schedules", "--json").stdout) == []


def test_compose_workflows_and_workflow_schedules_round_trip(net):
    doc = FUNNEL + '''
[[workflow]]
name = "chain"
pipeline = ["a", {parallel = ["a", {socket = "b", kwargs = {k = 2}}]}, {pipeline = ["b"]}]

[[schedule]]
name = "nightly"
workflow = "chain"
cron = "0 2 * * *"
grace = "10m"
args = [5]
'''
    first = json.loads(invoke(net, "compose", "apply", "-", "--json", input=doc).stdout)
    assert first["created"] == ["workflow chain", "schedule nightly"] and first["unchanged"] == ["workflow fan"]
    exported = invoke(net, "compose", "export").stdout
    assert 'funnel = [{"socket" = "a", "args" = [1]}, "b"]' in exported and 'workflow = "chain"' in exported
    again = json.loads(invoke(net, "compose", "apply", "-", "--json", input=exported).stdout)
    assert again["created"] == [] and again["updated"] == []
    rows = {r["name"]: r for r in json.loads(invoke(net, "ls", "workflows", "--json").stdout)}
    assert rows["fan"]["kind"] == "funnel" and rows["fan"]["sockets"] == "a b"
    assert rows["chain"]["kind"] == "pipeline"
    shown = json.loads(invoke(net, "show", "schedule", "nightly", "--json").stdout)
    assert (shown["workflow"], shown["socket"], shown["grace"]) == ("chain", None, 600)
    # a socket replaces the workflow (and back)
    assert invoke(net, "update", "schedule", "nightly", "socket=b").exit_code == 0
    shown = json.loads(invoke(net, "show", "schedule", "nightly", "--json").stdout)
    assert (shown["workflow"], shown["socket"]) == (None, "b")
    assert invoke(net, "update", "schedule", "nightly", "workflow=nope").exit_code == 2
    assert invoke(net, "update", "schedule", "nightly", "workflow=chain").exit_code == 0
    chain = json.loads(invoke(net, "show", "workflow", "chain", "--json").stdout)
    assert chain["schedules"] == ["nightly"] and chain["sockets"] == ["a", "b"]
    refused = invoke(net, "delete", "workflow", "chain")
    assert refused.exit_code == 2 and "started by schedule(s) nightly" in refused.stderr
    assert invoke(net, "delete", "workflow", "fan").exit_code == 0
    assert [r["name"] for r in json.loads(invoke(net, "ls", "workflows", "--json").stdout)] == ["chain"]
    assert invoke(net, "show", "workflow", "fan").exit_code == 2


@pytest.mark.parametrize("doc, message", [
    ('[[workflow]]\nname = "w"\n', "give exactly one of socket, pipeline, parallel, funnel"),
    ('[[workflow]]\nname = "w"\npipeline = []\n', "a pipeline needs at least one step"),
    ('[[workflow]]\nname = "w"\nfunnel = ["a"]\n', "a funnel needs a final step"),
    ('[[workflow]]\nname = "w"\npipeline = [{socket = "a", final = "b"}]\n', "unknown key(s) final for a socket"),
    ('[[workflow]]\nname = "w"\npipeline = [3]\n', "expected a socket's name or a table"),
    ('[[workflow]]\nname = "w"\npipeline = ["zz"]\n', "unknown socket 'zz'"),
    ('[[schedule]]\nname = "s"\nworkflow = "zz"\nevery = "1m"\n', "unknown workflow 'zz'"),
])
def test_bad_workflow_in_a_compose_file(net, doc, message):
    result = invoke(net, "compose", "apply", "-", input=doc)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert [r["name"] for r in json.loads(invoke(net, "ls", "workflows", "--json").stdout)] == ["fan"]


# -- firing in process: schedulers (fire_due callers) racing on one store and broker -------------

@pytest.fixture
def firing(tmp_path, net):
    """(store URL, embedded broker URL), the store open in this process."""
    from ectool.store import open_store

    open_store(net)
    return net, f"sqlite:///{tmp_path / 'queue.db'}"


def publisher_for(broker: str, namespace: str = ""):
    from ectool.publisher import Publisher
    from ectool.transport import connect

    return Publisher(connect(broker), namespace)


def run_rows(name: str):
    from ectool.store.models import Call, Workflow
    from ectool.store.schedules import Schedule, ScheduleTick

    row = Schedule.get(Schedule.name == name)
    ticks = list(ScheduleTick.select().where(ScheduleTick.schedule == row.id).order_by(ScheduleTick.tick))
    runs = list(Workflow.select().where(Workflow.id.in_([t.call for t in ticks] or [""])))
    calls = list(Call.select().where(Call.flow.startswith(f"schedule:{name}@")))
    return row, ticks, runs, calls


def test_two_schedulers_racing_start_each_ticks_workflow_once(firing):
    from ectool import scheduler, schedules

    _, broker = firing

    schedules.add("fan", workflow="fan", every="1s", catch_up="all", args=[100])
    start = run_rows("fan")[0].next_tick
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def agent(name):
        publisher = publisher_for(broker)
        try:
            for second in range(6):
                barrier.wait(30)
                for _ in range(2):  # and a retry of the same round
                    scheduler.fire_due(publisher, name, at=start + dt.timedelta(seconds=second, milliseconds=300))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()
        finally:
            publisher.transport.close()

    threads = [threading.Thread(target=agent, args=(f"a{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    row, ticks, runs, calls = run_rows("fan")
    assert [t.tick for t in ticks] == [start + dt.timedelta(seconds=i) for i in range(6)]
    assert all(t.status == "fired" and t.published for t in ticks)
    assert sorted(r.id for r in runs) == sorted(scheduler.tick_call_id(row.id, t.tick) for t in ticks)
    roots = [c for c in calls if c.parent is None]
    assert sorted(c.id for c in roots) == sorted(r.id for r in runs) and {c.socket for c in roots} == {"funnel"}
    # each run: its root, the funnel's parallel node and its two first calls (the final waits)
    assert len(calls) == 6 * 4
    firsts = sorted(json.loads(c.args)["args"] for c in calls if c.status == "queued")
    assert firsts == sorted([[100, 1], [100]] * 6)
    publisher = publisher_for(broker)
    try:
        assert publisher.transport.depth(publisher.target("a").queue) == 6
        assert publisher.transport.depth(publisher.target("b").queue) == 6
    finally:
        publisher.transport.close()


def test_a_claimed_workflow_tick_whose_publish_failed_is_begun_again_once(firing, monkeypatch):
    from ectool import scheduler, schedules
    from ectool.errors import Unreachable

    schedules.add("fan", workflow="fan", every="1s")
    publisher = publisher_for(firing[1])
    real = publisher.publish

    def broken(*_a, **_k):
        raise Unreachable("broker down")

    try:
        monkeypatch.setattr(publisher, "publish", broken)
        tick = run_rows("fan")[0].next_tick
        scheduler.fire_due(publisher, "a1", at=tick)
        _, ticks, runs, calls = run_rows("fan")
        assert len(ticks) == 1 and not ticks[0].published and len(runs) == 1
        assert publisher.transport.depth(publisher.target("a").queue) == 0
        monkeypatch.setattr(publisher, "publish", real)
        monkeypatch.setattr(scheduler, "REPUBLISH_AFTER", dt.timedelta(0))
        assert scheduler.republish(publisher, None, at=tick + dt.timedelta(milliseconds=1)) == 1
        _, ticks, runs, again = run_rows("fan")
        assert ticks[0].published and len(runs) == 1
        assert sorted(c.id for c in again) == sorted(c.id for c in calls) and len(again) == 4
        assert publisher.transport.depth(publisher.target("a").queue) == 1
        assert publisher.transport.depth(publisher.target("b").queue) == 1
        assert scheduler.republish(publisher, None, at=tick + dt.timedelta(seconds=1)) == 0  # flagged: done
    finally:
        publisher.transport.close()


def test_a_schedules_calls_are_listed_with_their_ticks(firing):
    from ectool import scheduler, schedules

    db, broker = firing
    schedules.add("fan", workflow="fan", every="1s", catch_up="skip")
    publisher = publisher_for(broker)
    try:
        tick = run_rows("fan")[0].next_tick
        scheduler.fire_due(publisher, "a1", at=tick + dt.timedelta(seconds=8))  # 3 late: missed
    finally:
        publisher.transport.close()
    _, ticks, runs, _ = run_rows("fan")
    listed = json.loads(invoke(db, "ls", "calls", "--schedule", "fan", "--json").stdout)
    assert [c["id"] for c in listed] == [t.call for t in reversed(ticks) if t.status == "fired"]
    assert {c["socket"] for c in listed} == {"funnel"} and {c["status"] for c in listed} == {"running"}
    assert listed[0]["tick"] > listed[-1]["tick"]
    limited = invoke(db, "schedule", "calls", "fan", "--limit", "2")
    assert limited.exit_code == 0 and len(limited.stdout.splitlines()) == 3  # a header and two calls
    shown = json.loads(invoke(db, "show", "schedule", "fan", "--last", "3", "--json").stdout)
    assert [t["status"] for t in shown["last_ticks"]] == ["running"] * 3
    text = invoke(db, "show", "schedule", "fan", "--last", "12").stdout
    assert "last 9 tick(s):" in text and text.count("missed") == 3
    assert invoke(db, "ls", "calls", "--schedule", "nope").exit_code == 2
    stats = json.loads(invoke(db, "stats", "--schedules", "--json").stdout)
    assert [(r["socket"], r["fired"], r["missed"]) for r in stats["schedules"]] == [("workflow fan", 6, 3)]


def test_python_api_schedules_a_workflow(net, monkeypatch, tmp_path):
    from ectool import api, schedules

    monkeypatch.setenv("EC_DB", net)
    monkeypatch.setenv("EC_BROKER", f"sqlite:///{tmp_path / 'queue.db'}")
    try:
        api.define_workflow("sum3", api.pipeline([api.Signature("a", [1]), api.Signature("b")]))
        api.Schedule(name="api", workflow="sum3", every="10m")
        assert schedules.show("api")["workflow"] == "sum3"
        with pytest.raises(Exception, match="unknown workflow"):
            api.Schedule(name="api2", workflow="nope", every="10m")
    finally:
        api.close()


# -- real workers finish what the tick started ------------------------------------------------

def test_a_workflow_tick_finishes_with_the_workflows_result(tmp_path, broker_url):
    """add_two(100, 1) and add_two(100, 2) in parallel, then total: 203, once per tick,
    with two schedulers firing the same ticks."""
    from ectool import scheduler, schedules
    from ectool.store import open_store
    from ectool.store.models import Call

    doc = ('[[workflow]]\nname = "fan"\nfunnel = [{socket = "add_two", args = [1]}, '
           '{socket = "add_two", args = [2]}]\nfinal = "total"\n')
    with sample_network(tmp_path, broker_url) as (env, proc):
        db = env["EC_DB"]
        assert invoke(db, "compose", "apply", "-", input=doc).exit_code == 0
        open_store(db)
        schedules.add("fan", workflow="fan", every="1s", catch_up="all", args=[100])
        start = run_rows("fan")[0].next_tick
        pubs = [publisher_for(broker_url, env["EC_NAMESPACE"]) for _ in range(2)]
        try:
            for second in range(3):
                for i, p in enumerate(pubs):
                    scheduler.fire_due(p, f"a{i}", at=start + dt.timedelta(seconds=second, milliseconds=200))
        finally:
            for p in pubs:
                p.transport.close()
        with workers(env, proc, 2):
            def finished():
                _, ticks, runs, _ = run_rows("fan")
                roots = list(Call.select().where(Call.id.in_([r.id for r in runs])))
                return roots if len(roots) == 3 and all(c.status == "done" for c in roots) else None

            roots = wait_for(finished, 120, what="three finished workflow runs")
        assert [json.loads(c.result) for c in roots] == [203, 203, 203]
        _, ticks, runs, calls = run_rows("fan")
        assert len(ticks) == len(runs) == 3 and len(calls) == 3 * 5  # root, parallel, 2 members, final
        listed = json.loads(invoke(db, "ls", "calls", "--schedule", "fan", "--json").stdout)
        assert [c["status"] for c in listed] == ["done"] * 3
