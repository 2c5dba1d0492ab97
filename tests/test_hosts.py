"""The test-host harness itself (tests/hosts.py): each host is its own machine as far as
ElasticCode can tell, a cut link is a real partition, and nothing is left behind, even
when the test fails or a run died without cleaning up."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest
from conftest import REQUIRE

from helpers import env_for, wait_for
from hosts import PREFIX, hosts, ip, netns_pids, sweep, unavailable

pytestmark = [pytest.mark.multihost]

PROBE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()"


@pytest.fixture
def urls(pg_url, amqp_url):
    reason = unavailable()
    if reason:
        if REQUIRE:
            pytest.fail(f"EC_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"SKIPPED, NO TEST HOSTS: {reason}")
    from ectool.store import open_store

    open_store(pg_url)
    return pg_url, amqp_url


def ours(run: str) -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.startswith(run)]


def reaches(net, host, port: int) -> bool:
    done = subprocess.run(["ip", "netns", "exec", host.netns, sys.executable, "-c", PROBE, host.gateway, str(port)],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def test_each_host_is_a_machine_of_its_own(urls, tmp_path):
    from ectool.store.models import Agent

    db_url, broker_url = urls
    with hosts(2, tmp_path, db_url, broker_url, env_for(db_url, broker_url)) as net:
        agents = wait_for(lambda: (rows := {a.name: a for a in Agent.select()}) and len(rows) == 2 and rows,
                          timeout=60, what="two agents registered")
        for h in net.hosts:
            assert agents[h.name].node.name == h.name  # its own host name (UTS namespace)
            assert agents[h.name].pid == h.pid  # the pid held is the agent's own
            assert psutil.Process(h.pid).cmdline()[1].endswith("ec-agentd")
            assert h.pid in netns_pids(h.netns)
            assert h.env["EC_DB"].startswith(f"postgresql://postgres@{h.gateway}:")
            assert f"10.213.{h.index}.2/24" in ip("-n", h.netns, "addr", "show", "eth0").stdout
        assert len({h.home for h in net.hosts}) == 2


def test_a_cut_link_is_a_partition_and_heals(urls, tmp_path):
    db_url, broker_url = urls
    with hosts(2, tmp_path, db_url, broker_url, env_for(db_url, broker_url)) as net:
        h1, h2 = net.hosts
        assert reaches(net, h1, 5432) and reaches(net, h2, 5432)
        net.partition(h1)
        assert not reaches(net, h1, 5432)
        assert reaches(net, h2, 5432)
        net.heal(h1)
        # a neighbour entry that failed during the cut is resolved again within seconds
        wait_for(lambda: reaches(net, h1, 5432), timeout=30, what="host1 reaching the store after the heal")


def test_everything_is_removed_even_when_the_test_fails(urls, tmp_path):
    db_url, broker_url = urls
    with pytest.raises(RuntimeError, match="the test failed"):
        with hosts(2, tmp_path, db_url, broker_url, env_for(db_url, broker_url)) as net:
            wait_for(lambda: all(len(net.processes(h)) >= 1 for h in net.hosts), what="agents")
            pids = [p for h in net.hosts for p in net.processes(h)] + [net.forwarder.pid]
            run = net.run
            raise RuntimeError("the test failed")
    assert ours(run) == []
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_a_dead_runs_leftovers_are_swept():
    reason = unavailable()
    if reason:
        pytest.skip(f"SKIPPED, NO TEST HOSTS: {reason}")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid whose process has exited: the "dead run"
    name = f"{PREFIX}-{gone.pid}-1-net"
    ip("netns", "add", name)
    proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "300"])
    try:
        wait_for(lambda: proc.pid in netns_pids(name), what="a process in the leftover namespace")
        assert name in sweep()
        assert proc.wait(10) is not None
        assert ours(name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ip("netns", "del", name, check=False)
