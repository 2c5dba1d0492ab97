"""`pytest -m multihost`: whole hosts die, are partitioned, go away, under the loss checker.

Each scenario runs 3 test hosts (tests/hosts.py: network namespaces, each with its own host
name and an ``ec-agentd``) on the distributed backend (PostgreSQL, RabbitMQ, reached through
the hosts' own links), keeps calls flowing and a nested workflow in flight through the
fault, then checks the history (tests/history.py): lost = 0, duplicated = 0. Each prints
the checker's table and what it measured. Agents take a host as lost after
``EC_AGENT_STALE`` = 5 s without a heartbeat (the default is 15 s).

Also a real RabbitMQ cluster of three nodes (tests/rabbit_cluster.py): a node killed and
restarted. ``pytest -m multihost``, alone (never under -n).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REQUIRE

from helpers import build_network, ec, env_for, make_repo, wait_for
from history import History, Report, check, settle
from hosts import hosts, unavailable

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

STALE = 5.0
#: documented bound on re-placement after a host dies: the stale time, an agent round
#: (1 s), a deploy from the agent's warm or cold cache and a worker start, with slack for a
#: loaded 2-core machine
REPLACE_BOUND = STALE + 45.0
WORKFLOW_SOCKETS = {"mark": ("mark", {}), "do_something": ("do_something", {}), "sleep": ("sleep", {})}


def ds_(*data) -> str:
    """What the sample's do_something returns, computed locally."""
    def show(v):
        return "[" + ", ".join(show(x) for x in v) + "]" if isinstance(v, list) else str(v)
    return "do_something(" + ", ".join(show(d) for d in data) + ")"


@dataclass
class Cluster:
    tmp: Path
    db_url: str
    broker_url: str
    env: dict
    history: History


def need_hosts() -> None:
    reason = unavailable()
    if reason:
        if REQUIRE:
            pytest.fail(f"EC_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"SKIPPED, NO TEST HOSTS: {reason}")


@contextmanager
def shared(tmp_path: Path, pg_url: str, broker_url: str, monkeypatch):
    """A PostgreSQL schema, a RabbitMQ namespace and the environment the hosts share; the
    scenario adds its processors. RabbitMQ queues are deleted afterwards."""
    need_hosts()
    env = env_for(pg_url, broker_url, EC_AGENT_STALE=str(STALE))
    for key in ("EC_DB", "EC_BROKER", "EC_AGENT_STALE"):
        monkeypatch.setenv(key, env[key])
    marks = tmp_path / "marks"
    marks.mkdir()
    c = Cluster(tmp_path, pg_url, broker_url, env, History(marks))
    try:
        yield c
    finally:
        from ectool import api

        api.close()
        _delete_queues(c)


@pytest.fixture
def cluster(tmp_path, pg_url, amqp_url, monkeypatch):
    """Test hosts' shared setup on the system RabbitMQ."""
    with shared(tmp_path, pg_url, amqp_url, monkeypatch) as c:
        yield c


def _delete_queues(c: Cluster) -> None:
    from ectool.agents import control_queue
    from ectool.calls import broker_queue
    from ectool.store.models import Agent, Socket
    from ectool.transport import connect

    ns = c.env["EC_NAMESPACE"]
    with connect(c.broker_url) as t:
        for s in Socket.select(Socket.name):
            t.delete_queue(broker_queue(s.name, ns))
        for a in Agent.select(Agent.name):
            t.delete_queue(control_queue(a.name, ns))


def network(c: Cluster, concurrency: int, pinned: str | None = None) -> None:
    """Processor ``work`` (CONCURRENCY workers, anywhere) serving mark, do_something and
    sleep; with PINNED, processor ``hw`` on that host only, serving hw_mark and hw_do."""
    from ectool.store.models import Processor

    repo = make_repo(c.tmp / f"repo-{uuid.uuid4().hex[:6]}")
    build_network(c.db_url, repo, processor="work", sockets=WORKFLOW_SOCKETS)
    Processor.update(concurrency=concurrency).where(Processor.name == "work").execute()
    if pinned:
        from ectool import network as net

        net.add_processor("hw", f"file://{repo}", "pyfi.processors.sample", host=pinned)
        net.add_socket("hw_mark", "q", "hw", "mark")
        net.add_socket("hw_do", "q", "hw", "do_something")


def workflow():
    """A funnel over a pipeline and a parallel, with sleeps so it is in flight for seconds."""
    from ectool.api import Socket, funnel, parallel, pipeline

    ds, sl = Socket(name="do_something").p, Socket(name="sleep").p
    return funnel([pipeline([sl(1.0, "a"), ds("b")]), parallel([sl(1.0, "c"), ds("d")]),
                   pipeline([sl(1.0, "e"), ds("f")])])(ds("end"))


WORKFLOW_RESULT = ds_([ds_("a", "b"), ["c", ds_("d")], ds_("e", "f")], "end")


class Producer:
    """Submits 20 mark calls every 0.1 s to SOCKET until stopped; records the history."""

    def __init__(self, c: Cluster, socket: str = "mark", prefix: str = "k") -> None:
        from ectool.calls import Client
        from ectool.config import load

        self.c, self.socket, self.prefix = c, socket, prefix
        self.client = Client(load())
        self.stop_event = threading.Event()
        self.n = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.c.history.submit(self.client, self.socket, [f"{self.prefix}{self.n + i}" for i in range(20)], 0.005)
            self.n += 20
            time.sleep(0.1)

    def __enter__(self) -> Producer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(60)
        self.client.close()


def running(processor: str) -> dict[str, int]:
    """host -> workers of PROCESSOR with status running (as the store has them)."""
    from ectool.store.models import Processor, Worker

    rows = (Worker.select(Worker.host).join(Processor)
            .where((Processor.name == processor) & (Worker.status == "running")))
    out: dict[str, int] = {}
    for w in rows:
        out[w.host] = out.get(w.host, 0) + 1
    return out


def done_on(host: str, since) -> int:
    from ectool.store.models import Call

    return Call.select().where((Call.host == host) & (Call.status == "done") & (Call.finished > since)).count()


def report(c: Cluster, scenario: str, started: float) -> Report:
    settle(c.history, 180)
    return check(c.history, scenario, started)


def assert_clean(r: Report) -> None:
    assert r.confirmed > 0
    assert (r.lost, r.duplicated, r.unexpected) == (0, 0, 0), r


def test_host_death_replaces_its_processors(cluster, capsys):
    """kill -9 a host's agent and workers: its processors are re-placed on the others
    (the time it took is printed, a figure, not asserted: timings belong in bench/hosts);
    nothing is lost, the workflow finishes."""
    c = cluster
    network(c, concurrency=2)
    started = time.monotonic()
    with hosts(3, c.tmp, c.db_url, c.broker_url, c.env, ("--cpus", "2")) as net:
        wait_for(lambda: sum(running("work").values()) == 2, timeout=120, what="2 workers of work")
        with Producer(c):
            wait_for(lambda: c.history.confirmed and done_on_any(), timeout=60, what="calls flowing")
            flow = workflow()
            placed = running("work")
            victim = net.host(max(placed, key=placed.get))
            t0 = time.monotonic()
            net.kill(victim)
            wait_for(lambda: sum(n for h, n in running("work").items() if h != victim.name) == 2,
                     timeout=REPLACE_BOUND + 60, every=0.2, what="work re-placed on the other hosts")
            replaced = time.monotonic() - t0
            dead = shown("ls", "workers", host=victim.name)
            time.sleep(1.0)  # calls keep coming onto the re-placed workers
        result = flow.get(timeout=180)
        r = report(c, f"host kill -9 ({victim.name} of 3)", started)
    with capsys.disabled():
        print(f"\n{Report.header()}\n{r.line()}\n  re-placement after host death: {replaced:.1f} s "
              f"(bound {REPLACE_BOUND:.0f} s)")
    assert result == WORKFLOW_RESULT
    assert_clean(r)
    # its heartbeat is stale once its work is re-placed: ec ls workers never says running
    assert dead and "running" not in dead, dead


def shown(*command: str, **where: str) -> set[str]:
    """The statuses ``ec COMMAND --json`` shows for the rows matching WHERE."""
    rows = json.loads(ec(*command, "--json", env=os.environ.copy()).stdout)
    return {r["status"] for r in rows if all(r.get(k) == v for k, v in where.items())}


def done_on_any() -> bool:
    from ectool.store.models import Call

    return Call.select().where(Call.status == "done").exists()


def broker_connections_from(host) -> list[str]:
    """The names of the system RabbitMQ's connections opened by HOST's agent or workers
    (ec names each connection with its pid; the test hosts share the root's pid space)."""
    import subprocess

    import psutil

    agent = psutil.Process(host.proc.pid)
    pids = {agent.pid} | {p.pid for p in agent.children(recursive=True)}
    out = subprocess.run(["rabbitmqctl", "list_connections", "client_properties", "--formatter", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    names = [str({k: v for k, _t, v in conn.get("client_properties", [])}.get("connection_name", ""))
             for conn in json.loads(out)]
    return [n for n in names if n.rpartition("pid=")[2].isdigit() and int(n.rpartition("pid=")[2]) in pids]


def test_partitioned_host_rejoins_and_nothing_completes_twice(cluster, capsys):
    """Cut one host's link for 20 s mid-flow, then restore it: RabbitMQ closes the host's
    connections (its workers lose the broker; their deliveries go to the others while the
    cut host may still be running them), yet no call has two outcomes, nothing is lost, and
    the host's agent comes back online and its worker serves again."""
    from ectool.store.models import Agent, now

    c = cluster
    network(c, concurrency=3)
    started = time.monotonic()
    # 5 s AMQP heartbeats on the hosts: the broker closes the cut host's connections
    # (two missed heartbeats) well inside the 20 s, so its workers really lose the broker
    # and their unacknowledged deliveries go to the other hosts while it still holds them
    quick = c.broker_url + ("&" if "?" in c.broker_url else "?") + "heartbeat=5"
    with hosts(3, c.tmp, c.db_url, quick, c.env) as net:
        wait_for(lambda: len(running("work")) == 3, timeout=120, what="a worker of work on each host")
        victim = net.hosts[0]
        with Producer(c):
            wait_for(done_on_any, timeout=60, what="calls flowing")
            flow = workflow()
            assert broker_connections_from(victim), f"{victim.name} has no RabbitMQ connection to lose"
            cut = time.monotonic()
            net.partition(victim)
            # the others see its heartbeat age (the link is really down), then the cut lasts
            # its 20 s (the fault's length, not a wait for an outcome)
            wait_for(lambda: Agent.get(Agent.name == victim.name).status in ("offline", "lost"), timeout=20, every=0.2,
                     what=f"the other agents taking {victim.name} as lost")
            wait_for(lambda: not broker_connections_from(victim), timeout=20, every=0.5,
                     what=f"RabbitMQ closing {victim.name}'s connections (missed heartbeats)")
            time.sleep(max(0.0, 20.0 - (time.monotonic() - cut)))
            net.heal(victim)
            healed, healed_at = time.monotonic(), now()
            wait_for(lambda: done_on(victim.name, healed_at), timeout=180, every=0.2,
                     what=f"{victim.name} completing calls after the heal")
            resumed = time.monotonic() - healed
            back = wait_for(lambda: Agent.get(Agent.name == victim.name).heartbeat > healed_at, timeout=60,
                            what=f"{victim.name}'s agent heartbeat after the heal")
            # it rejoins: shown online again, its worker shown running
            wait_for(lambda: shown("agent", "ls", name=victim.name) == {"online"}, timeout=60,
                     what=f"{victim.name}'s agent shown online")
            wait_for(lambda: "running" in shown("ls", "workers", host=victim.name), timeout=60,
                     what=f"{victim.name}'s worker shown running")
        result = flow.get(timeout=180)
        r = report(c, f"host partitioned 20 s ({victim.name})", started)
        assert back and victim.pid, "the partitioned host's agent died"
    with capsys.disabled():
        print(f"\n{Report.header()}\n{r.line()}\n  calls resume on the healed host after: {resumed:.1f} s")
    assert result == WORKFLOW_RESULT
    assert_clean(r)


def test_pinned_processor_waits_for_its_host(cluster, capsys):
    """A processor pinned to a host that goes away: its calls wait (queued, in ec ls calls
    and ec stats) and run when the host comes back; the workflow finishes where it left
    off (the steps done before are not run again)."""
    from ectool.api import Socket, pipeline
    from ectool.store.models import Call

    c = cluster
    network(c, concurrency=2, pinned="host2")
    started = time.monotonic()
    with hosts(3, c.tmp, c.db_url, c.broker_url, c.env) as net:
        hw = net.host("host2")
        wait_for(lambda: running("hw") == {"host2": 1} and sum(running("work").values()) == 2, timeout=120,
                 what="hw on host2, work elsewhere")
        net.kill(hw)
        ds, hw_do = Socket(name="do_something").p, Socket(name="hw_do").p
        flow = pipeline([ds("one"), hw_do("two"), ds("three")])()
        with Producer(c, "hw_mark", "hw"):
            wait_for(lambda: c.history.confirmed, timeout=30, what="calls to the pinned socket")
        waiting = wait_for(lambda: Call.select().where((Call.root == flow.id) & (Call.socket == "hw_do")).first(),
                           timeout=60, what="the workflow reaching its pinned step")
        listed = json.loads(ec("ls", "calls", "--socket", "hw_mark", "--json", "--limit", "100000",
                               env=c.env).stdout)
        stats = json.loads(ec("stats", "hw_mark", "--json", env=c.env).stdout)
        assert listed and {row["status"] for row in listed} == {"queued"}
        assert waiting.status == "queued"
        assert _queued_in_stats(stats, "hw_mark") == len(c.history.confirmed)
        first = Call.get((Call.root == flow.id) & (Call.socket == "do_something") & (Call.status == "done"))
        t0 = time.monotonic()
        net.start(hw)
        result = flow.get(timeout=180)
        back = time.monotonic() - t0
        r = report(c, "pinned host away, back (host2)", started)
    with capsys.disabled():
        print(f"\n{Report.header()}\n{r.line()}\n  workflow done after the host is back: {back:.1f} s")
    assert result == ds_(ds_(ds_("one"), "two"), "three")
    assert Call.get_by_id(first.id).attempts == 1
    assert_clean(r)


def test_drained_host_hands_its_processor_over_and_no_call_fails(cluster, capsys):
    """ec node drain HOST --wait while calls run: no call fails, the processor ends up on
    the other hosts (replacements first, then the drained host's workers stop)."""
    c = cluster
    network(c, concurrency=2)
    started = time.monotonic()
    with hosts(3, c.tmp, c.db_url, c.broker_url, c.env, ("--cpus", "2")) as net:
        wait_for(lambda: sum(running("work").values()) == 2, timeout=120, what="2 workers of work")
        with Producer(c):
            wait_for(done_on_any, timeout=60, what="calls flowing")
            flow = workflow()
            placed = running("work")
            victim = net.host(max(placed, key=placed.get))
            t0 = time.monotonic()
            drained = ec("node", "drain", victim.name, "--wait", "--timeout", "120", env=c.env, timeout=180)
            took = time.monotonic() - t0
            time.sleep(1.0)  # calls keep coming onto the other hosts
        result = flow.get(timeout=180)
        r = report(c, f"host drained ({victim.name} of 3)", started)
        after = running("work")
        assert victim.pid, "the drained host's agent stopped"
    with capsys.disabled():
        print(f"\n{Report.header()}\n{r.line()}\n  drain done after: {took:.1f} s")
    assert drained.returncode == 0, drained.stderr
    assert result == WORKFLOW_RESULT
    assert_clean(r)
    assert victim.name not in after and sum(after.values()) == 2, after


def _queued_in_stats(stats: dict, socket: str) -> int:
    row = next(s for s in stats["sockets"] if s["socket"] == socket)
    return row["queued"]


def running_nodes(cluster, via: int) -> set[str]:
    out = cluster.ctl(via, "cluster_status", "--formatter", "json").stdout
    return set(json.loads(out)["running_nodes"])


def test_cluster_runs_three_nodes_and_a_killed_one_rejoins(rabbit_cluster):
    names = {n.name for n in rabbit_cluster.nodes}
    assert running_nodes(rabbit_cluster, 0) == names
    assert rabbit_cluster.url.count(",") == 2
    rabbit_cluster.kill(2)
    assert running_nodes(rabbit_cluster, 0) == names - {rabbit_cluster.nodes[2].name}
    rabbit_cluster.start(2)
    assert running_nodes(rabbit_cluster, 0) == names


@pytest.mark.parametrize("victim_is", ["consumers", "leader"])
def test_node_kill_mid_flow_loses_nothing(rabbit_cluster, tmp_path, capsys, victim_is):
    """The node holding the workers' consumers, or the one leading the socket's queue, is
    killed mid-flow, then restarted: calls keep flowing (the time until they do is
    printed), nothing lost or duplicated."""
    from cluster_scenarios import rabbitmq_node_kill

    from fault_scenarios import cleanup, setup
    from history import Report

    ctx = setup(tmp_path / "s", rabbit_cluster.url)
    try:
        result = rabbitmq_node_kill(ctx, rabbit_cluster, victim_is)
    finally:
        from ectool.store import close_store

        cleanup(ctx)
        close_store()
    report = result.report
    with capsys.disabled():
        print(f"\n{Report.header()}\n{report.line()}\n"
              f"killed {result.victim} ({victim_is}; {result.consumers_there} worker consumers on it): first outcome "
              f"{result.first_outcome:.2f}s after the kill, calls sent after it done {result.resumed_after:.2f}s "
              f"after it; restarted, the node rejoined in {result.rejoined_after:.1f}s")
        for error in sorted(set(ctx.history.errors)):
            print(f"submit failed ({ctx.history.errors.count(error)}x): {error}")
    assert report.confirmed > 0
    assert (report.lost, report.duplicated, report.unexpected) == (0, 0, 0), report


def quorum_members(cluster, queue: str, via: int = 0) -> set[str]:
    out = cluster.ctl(via, "list_queues", "name", "type", "members", "--formatter", "json").stdout
    row = next(q for q in json.loads(out) if q["name"] == queue)
    assert row["type"] == "quorum", row
    return set(row["members"])


def test_quorum_queues_are_replicated_on_every_node(rabbit_cluster, queue_name):
    """A socket queue declared through the multi-node URL has a member on each of the three
    nodes (RabbitMQ 3.10's default group size: every cluster node), even one declared while
    a node is down, so losing any one node loses no message."""
    from ectool.transport import connect

    names = {n.name for n in rabbit_cluster.nodes}
    with connect(rabbit_cluster.url) as t:
        t.declare(queue_name)
        assert quorum_members(rabbit_cluster, queue_name) == names
        assert quorum_members(rabbit_cluster, "ec.dead") == names
        rabbit_cluster.kill(1)
        t.declare(queue_name + ".late")
        assert quorum_members(rabbit_cluster, queue_name + ".late") == names
        rabbit_cluster.start(1)
        t.delete_queue(queue_name)
        t.delete_queue(queue_name + ".late")


def test_delayed_messages_survive_their_delay_queues_node(rabbit_cluster, queue_name):
    """A delay queue is a classic queue on the node it was declared through. With that node
    down a retry still goes out (through an alternate delay queue on a running node), and
    what the first one held comes back with its node: both messages arrive."""
    from ectool.transport import connect

    with connect(rabbit_cluster.urls[0]) as t:
        t.declare(queue_name)
        t.publish(queue_name, [b"before"], delay=1.0)  # its delay queue is on node 1
    rabbit_cluster.kill(0)
    with connect(rabbit_cluster.urls[1]) as t:
        t.publish(queue_name, [b"during"], delay=1.0)
        consumer = t.consumer([queue_name])
        try:
            first = consumer.get(timeout=60)
            assert first is not None and first.body == b"during"
            consumer.ack([first])
            rabbit_cluster.start(0)
            second = consumer.get(timeout=60)
            assert second is not None and second.body == b"before"
            consumer.ack([second])
        finally:
            consumer.close()
        t.delete_queue(queue_name)


def test_rabbitmq_node_killed_under_three_hosts(tmp_path, pg_url, rabbit_cluster, monkeypatch, capsys):
    """Three test hosts on a three-node RabbitMQ cluster (the hosts reach every node through
    their own links): the node holding most worker consumers is killed mid-flow, then
    restarted; calls keep flowing, nothing is lost or duplicated, the workflow finishes."""
    need_hosts()
    from cluster_scenarios import busiest_node, connections_by_node

    from ectool.store.models import Call, now

    def done_since(stamp) -> bool:
        return Call.select().where((Call.finished > stamp) & (Call.created > stamp)).exists()

    with shared(tmp_path, pg_url, rabbit_cluster.url, monkeypatch) as c:
        network(c, concurrency=3)
        started = time.monotonic()
        with hosts(3, c.tmp, c.db_url, c.broker_url, c.env) as net:
            wait_for(lambda: len(running("work")) == 3, timeout=120, what="a worker of work on each host")
            with Producer(c):
                wait_for(done_on_any, timeout=60, what="calls flowing")
                flow = workflow()
                victim = busiest_node(rabbit_cluster)
                consumers = sum("consumer" in name for name in connections_by_node(rabbit_cluster)[victim])
                stamp, t0 = now(), time.monotonic()
                rabbit_cluster.kill(victim)
                wait_for(lambda: done_since(stamp), timeout=120, every=0.1, what="calls sent after the kill done")
                resumed = time.monotonic() - t0
                rabbit_cluster.start(victim)
                stamp = now()
                wait_for(lambda: done_since(stamp), timeout=120, every=0.1, what="calls sent after the restart done")
            result = flow.get(timeout=180)
            r = report(c, "RabbitMQ node kill -9, 3 hosts", started)
            assert all(h.pid for h in net.hosts), "an agent died with the node"
    with capsys.disabled():
        print(f"\n{Report.header()}\n{r.line()}\n  killed a node holding {consumers} worker consumer(s); calls "
              f"sent after the kill done after: {resumed:.1f} s")
    assert result == WORKFLOW_RESULT
    assert_clean(r)


def test_a_client_whose_inbox_node_dies_still_gets_its_outcome(rabbit_cluster, tmp_path, monkeypatch):
    """The node holding a waiting client's reply inbox is killed: the client reads the
    outcome from the store instead (and its next calls get a new inbox)."""
    import os

    from cluster_scenarios import connections_by_node

    from ectool.calls import Client
    from ectool.config import load
    from helpers import sample_network, workers

    with sample_network(tmp_path, rabbit_cluster.url) as (env, proc):
        for key in ("EC_DB", "EC_BROKER", "EC_NAMESPACE"):
            monkeypatch.setenv(key, env[key])
        client = Client(load())
        try:
            with workers(env, proc, 1):
                assert client.call("echo", ["warm"], timeout=60).result == "warm"
                cid = client.submit("sleep", [([2.0, "slept"], {})])[0]
                mine = f"ectool inbox pid={os.getpid()}"
                node = next(i for i, names in connections_by_node(rabbit_cluster).items() if mine in names)
                rabbit_cluster.kill(node)
                outcome = client.wait([cid], timeout=60)[cid]
                assert (outcome.status, outcome.result) == ("done", "slept")
                assert client.call("echo", ["again"], timeout=60).result == "again"
                rabbit_cluster.start(node)  # deleting the test's quorum queues waits for a down member
        finally:
            client.close()


def test_a_hand_off_goes_to_an_alternate_delay_queue(rabbit_cluster, queue_name):
    """A worker's consumer hands off a delivery it held too long by parking a copy in the
    queue's delay queue; with that delay queue's node down, the copy goes to an alternate
    and the consumer keeps its connection (the copy comes back, not a redelivery)."""
    from ectool.transport import connect
    from helpers import wait_for

    with connect(rabbit_cluster.urls[0]) as t:
        t.declare(queue_name)
        t.publish(queue_name, [b"early"], delay=0.5)  # creates the 0.5 s delay queue on node 1
        wait_for(lambda: t.depth(queue_name) == 1, what="the delayed message back")
        t.purge(queue_name)
    rabbit_cluster.kill(0)
    from cluster_scenarios import queue_leader

    # the queue itself is replicated: publish once it has its new leader (the delay queue,
    # on node 1 only, is what this test is about)
    def led_elsewhere() -> bool:
        try:
            return queue_leader(rabbit_cluster, queue_name) != 0
        except (StopIteration, ValueError):  # not listed yet, or no leader named
            return False

    wait_for(led_elsewhere, timeout=60, every=0.2, what="a new leader for the queue")
    with connect(rabbit_cluster.urls[1]) as t:
        consumer = t.consumer([queue_name], hand_off_after=0.5)
        try:
            t.publish(queue_name, [b"held"])
            held = consumer.get(timeout=30)
            assert held is not None and held.body == b"held"
            copy = consumer.get(timeout=30)  # not acked: handed off after 0.5 s, back 0.5 s later
            assert copy is not None and copy.body == b"held"
            assert copy.headers.get("x-ec-parked") == 1, copy.headers
            assert copy.tag[0] == held.tag[0], "the consumer lost its connection"
            consumer.ack([held, copy])
        finally:
            consumer.close()
        rabbit_cluster.start(0)
        t.delete_queue(queue_name)
