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
