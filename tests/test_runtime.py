"""The rows every view shows, read from a real store (SQLite and PostgreSQL): what the
rows say is overruled by stale heartbeats (ectool.liveness, table-tested apart)."""

from __future__ import annotations

import datetime as dt

import pytest

from ectool import runtime
from ectool.store import open_store
from ectool.store.models import Agent, Node, Placement, Processor, Worker, now


@pytest.fixture
def store(db_url, monkeypatch):
    monkeypatch.setenv("EC_AGENT_STALE", "15")
    database = open_store(db_url)
    yield database
    database.close()


def ago(seconds: float) -> dt.datetime:
    return now() - dt.timedelta(seconds=seconds)


def test_a_dead_hosts_rows_are_shown_lost_and_not_counted(store):
    proc = Processor.create(name="p1", gitrepo="/r", module="m", concurrency=3)
    live_node = Node.create(name="n1", cpus=4, load1=0.5)
    dead_node = Node.create(name="n2", cpus=2, state="cordoned")
    Node.create(name="n3")  # added for planning: no agent ever ran there
    live = Agent.create(name="a1", node=live_node, status="online", heartbeat=ago(1), cpus=4)
    dead = Agent.create(name="a2", node=dead_node, status="online", heartbeat=ago(60), cpus=2)
    Placement.create(processor=proc, agent=live, workers=1)
    Placement.create(processor=proc, agent=dead, workers=2)
    Worker.create(processor=proc, agent=live, host="n1", pid=11, status="running", heartbeat=ago(2))
    # killed -9 with their host: the rows still say running, one heartbeat still looks fresh
    Worker.create(processor=proc, agent=dead, host="n2", pid=21, status="running", heartbeat=ago(5))
    Worker.create(processor=proc, agent=dead, host="n2", pid=22, status="running", heartbeat=ago(60))
    Worker.create(processor=proc, host="n9", pid=31, status="running", heartbeat=ago(120))  # ec worker, gone
    Worker.create(processor=proc, agent=live, host="n1", pid=12, status="stopped", heartbeat=ago(300))

    shown = {w["pid"]: w["status"] for w in runtime.worker_rows()}
    assert shown == {11: "running", 21: "lost", 22: "lost", 31: "lost"}
    assert 12 in {w["pid"] for w in runtime.worker_rows(everything=True)}
    assert runtime.live_workers(proc.id) == 1
    assert {a["name"]: a["status"] for a in runtime.agent_rows()} == {"a1": "online", "a2": "lost"}
    nodes = {n["name"]: n for n in runtime.node_rows()}
    assert {k: (n["state"], n["workers"], n["processors"]) for k, n in nodes.items()} == {
        "n1": ("online", 1, ["p1x1"]), "n2": ("lost", 0, []), "n3": ("offline", 0, [])}
    assert (nodes["n1"]["cpus"], nodes["n1"]["load"], nodes["n1"]["agents"]) == (4, 0.5, ["a1"])
    assert nodes["n2"]["wish"] == "cordoned"


def test_drained_only_once_nothing_runs_there(store):
    proc = Processor.create(name="p1", gitrepo="/r", module="m")
    node = Node.create(name="n1", state="draining")
    agent = Agent.create(name="a1", node=node, status="online", heartbeat=ago(1))
    Placement.create(processor=proc, agent=agent, workers=1)
    Worker.create(processor=proc, agent=agent, host="n1", pid=11, status="running", heartbeat=ago(1))
    assert runtime.node_rows()[0]["state"] == "draining"
    Placement.delete().execute()
    Worker.update(status="stopped").execute()
    assert runtime.node_rows()[0]["state"] == "drained"


def test_a_drain_says_what_capacity_it_waits_for(store):
    from ectool import nodes

    p1 = Processor.create(name="p1", gitrepo="/r", module="m", concurrency=3)
    p2 = Processor.create(name="p2", gitrepo="/r", module="m", concurrency=1)
    old = Agent.create(name="a1", node=Node.create(name="n1", state="draining"), status="online", heartbeat=ago(1))
    other = Agent.create(name="a2", node=Node.create(name="n2"), status="online", heartbeat=ago(1))
    gone = Agent.create(name="a3", node=Node.create(name="n3"), status="online", heartbeat=ago(60))
    Placement.create(processor=p1, agent=old, workers=2)
    Placement.create(processor=p2, agent=old, workers=1)
    Placement.create(processor=p1, agent=other, workers=2)
    Placement.create(processor=p2, agent=gone, workers=1)  # a lost agent's placement counts for nothing
    assert nodes.shortfall("n1") == {"p1": 1, "p2": 1}
    assert nodes.waiting_for(nodes.shortfall("n1")) == (
        "waiting for capacity on other nodes (p1 1 worker(s), p2 1 worker(s) short); the old workers keep serving")
    more = Agent.create(name="a4", node=Node.get(Node.name == "n2"), status="online", heartbeat=ago(1))
    Placement.create(processor=p1, agent=more, workers=1)
    Placement.create(processor=p2, agent=other, workers=1)
    assert nodes.shortfall("n1") == {}
    assert nodes.waiting_for({}) == "replacements are starting on other nodes"


def test_one_shot_usage_fills_local_rows_and_shows_a_gone_process_lost():
    """``ec ls workers``/``ec stats`` measure local workers once (metrics.usage.sample): a
    live process gets figures, a gone one is lost unless it stopped, others are left."""
    import os
    import subprocess
    import sys

    from ectool.metrics.usage import HOST, sample

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = int(done.stdout)
    rows = [{"host": HOST, "pid": os.getpid(), "status": "running"},
            {"host": HOST, "pid": gone, "status": "running"},
            {"host": HOST, "pid": gone, "status": "stopped"},
            {"host": "elsewhere", "pid": 1, "status": "running"}]
    sample(rows, seconds=0.01)
    assert rows[0]["status"] == "running" and rows[0]["rss_mb"] > 0
    assert [r["status"] for r in rows[1:]] == ["lost", "stopped", "running"]
    assert "rss_mb" not in rows[3]
