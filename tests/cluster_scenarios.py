"""Fault scenarios on a RabbitMQ cluster (tests/rabbit_cluster.py), under the loss checker.

Used by ``pytest -m multihost`` (tests/test_multihost.py); the scenario returns the
checker's :class:`~history.Report` and what it measured. Every process it starts is
stopped by pid, even on failure.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

from fault_scenarios import Ctx, client, keys
from helpers import wait_for, workers
from history import Report, check, settle


def connections_by_node(cluster) -> dict[int, list[str]]:
    """The client-provided names of the AMQP connections on each running node (by index):
    the node a connection is on is the one whose AMQP port it reached."""
    via = cluster.running()[0]
    out = cluster.ctl(via, "list_connections", "name", "client_properties", "--formatter", "json").stdout
    ports = {n.port: i for i, n in enumerate(cluster.nodes)}
    found: dict[int, list[str]] = {i: [] for i in cluster.running()}
    for conn in json.loads(out):
        port = int(conn["name"].rsplit(":", 1)[-1])
        props = {key: value for key, _type, value in conn.get("client_properties", [])}
        if port in ports:
            found.setdefault(ports[port], []).append(str(props.get("connection_name", "")))
    return found


def busiest_node(cluster, kind: str = "consumer") -> int:
    """The running node holding the most ElasticCode ``kind`` connections (a worker's
    consumer by default): the one whose loss costs the most."""
    counts = {i: sum(kind in name for name in names) for i, names in connections_by_node(cluster).items()}
    return max(counts, key=lambda i: (counts[i], -i))


def queue_leader(cluster, queue: str) -> int:
    """The index of the node leading quorum queue ``queue``."""
    out = cluster.ctl(cluster.running()[0], "list_queues", "name", "leader", "--formatter", "json").stdout
    leader = next(q["leader"] for q in json.loads(out) if q["name"] == queue)
    return [n.name for n in cluster.nodes].index(leader)


@dataclass
class NodeKill:
    report: Report
    victim: str  # the killed node's name
    consumers_there: int  # worker consumers it held when killed
    first_outcome: float  # seconds from the kill to the first outcome recorded after it
    resumed_after: float  # seconds from the kill to the first outcome of a call sent after it
    rejoined_after: float  # seconds the restarted node took to rejoin


def rabbitmq_node_kill(ctx: Ctx, cluster, victim_is: str = "consumers", batch: int = 20) -> NodeKill:
    """``ec worker -c 2`` and a producer (BATCH calls every 0.1 s) on a three-node cluster;
    a node is killed (-9) mid-flow: the one holding most worker consumers (``victim_is`` =
    ``consumers``) or the leader of the socket's quorum queue (``leader``). Once calls sent
    after the kill come back done it is restarted, and the producer stops once calls sent
    after the restart do too."""
    from ectool.calls import broker_queue
    from ectool.store.models import Call, Worker, now

    started = time.monotonic()
    c = client()
    stop = threading.Event()

    def produce():
        n = 0
        while not stop.is_set():
            ctx.history.submit(c, "mark", keys(f"n{n}", batch), 0.001)
            n += batch
            time.sleep(0.1)

    def done_since(stamp, sent_after: bool = False) -> bool:
        query = Call.select().where(Call.finished > stamp)
        return (query.where(Call.created > stamp) if sent_after else query).exists()

    producer = threading.Thread(target=produce)
    try:
        with workers(ctx.env, ctx.proc, 2) as w:
            wait_for(lambda: Worker.select().where(Worker.status == "running").count() >= 2, timeout=60,
                     what="workers registered")
            stamp = now()
            producer.start()
            wait_for(lambda: done_since(stamp, True), timeout=60, what="calls flowing")
            if victim_is == "leader":
                victim = queue_leader(cluster, broker_queue("mark", ctx.env["EC_NAMESPACE"]))
            else:
                victim = busiest_node(cluster)
            consumers = sum("consumer" in name for name in connections_by_node(cluster)[victim])
            stamp, t_kill = now(), time.monotonic()
            cluster.kill(victim)
            wait_for(lambda: done_since(stamp), timeout=120, every=0.02, what="an outcome after the kill")
            first = time.monotonic() - t_kill
            wait_for(lambda: done_since(stamp, True), timeout=120, every=0.02,
                     what="calls sent after the kill done")
            resumed = time.monotonic() - t_kill
            t_start = time.monotonic()
            cluster.start(victim)
            rejoined = time.monotonic() - t_start
            stamp = now()
            wait_for(lambda: done_since(stamp, True), timeout=120, what="calls sent after the restart done")
            stop.set()
            producer.join(180)
            settle(ctx.history, 180)
            assert w.poll() is None, "the worker supervisor died"
    finally:
        stop.set()
        if producer.is_alive():
            producer.join(60)
        c.close()
    report = check(ctx.history, f"RabbitMQ node kill -9 ({victim_is})", started)
    return NodeKill(report, cluster.nodes[victim].name, consumers, first, resumed, rejoined)
