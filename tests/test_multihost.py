"""A real RabbitMQ cluster of three nodes (tests/rabbit_cluster.py): ElasticCode on all
three, a node killed and restarted under the loss checker. ``pytest -m multihost``, alone."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.multihost, pytest.mark.slow]


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
