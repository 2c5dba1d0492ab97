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


def test_node_kill_mid_flow_loses_nothing(rabbit_cluster, tmp_path, capsys):
    """The node holding the workers' consumers is killed mid-flow, then restarted: calls
    keep flowing (the time until they do is printed), nothing lost or duplicated."""
    from cluster_scenarios import rabbitmq_node_kill

    from fault_scenarios import cleanup, setup
    from history import Report

    ctx = setup(tmp_path / "s", rabbit_cluster.url)
    try:
        result = rabbitmq_node_kill(ctx, rabbit_cluster)
    finally:
        from ectool.store import close_store

        cleanup(ctx)
        close_store()
    report = result.report
    with capsys.disabled():
        print(f"\n{Report.header()}\n{report.line()}\n"
              f"killed {result.victim} ({result.consumers_there} worker consumers on it): first outcome "
              f"{result.first_outcome:.2f}s after the kill, calls sent after it done {result.resumed_after:.2f}s "
              f"after it; restarted, the node rejoined in {result.rejoined_after:.1f}s")
    assert report.confirmed > 0
    assert (report.lost, report.duplicated, report.unexpected) == (0, 0, 0), report
