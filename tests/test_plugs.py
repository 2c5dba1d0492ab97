"""Plugs end to end on both transports: chains, error edges, fan-in per flow, cycles,
re-wiring without restarts."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from helpers import ec, sample_network, wait_for, workers

SOCKETS = {
    "ds": ("do_something", {}), "up": ("upper", {}), "boom": ("boom", {}), "echo": ("echo", {}),
    "left": ("echo", {}), "right": ("echo", {}), "add": ("add_two", {}),
}


@pytest.fixture
def net(tmp_path, broker_url):
    with sample_network(tmp_path, broker_url, SOCKETS) as network:
        yield network


def ok(done):
    assert done.returncode == 0, done.stderr
    return done


def calls_of(env, socket):
    return json.loads(ec("ls", "calls", "--socket", socket, "--json", env=env).stdout)


def test_chain_and_error_edge(net):
    env, proc = net
    ok(ec("add", "plug", "-n", "p1", "--source", "ds", "--target", "up", env=env))
    ok(ec("add", "plug", "-n", "oops", "--source", "boom", "--target", "echo", "--on", "error", env=env))
    with workers(env, proc, 2):
        src = json.loads(ok(ec("run", "ds", "x", "--json", env=env)).stdout)["id"]
        done = wait_for(lambda: [c for c in calls_of(env, "up") if c["status"] == "done"], what="plugged call")
        assert done[0]["result"] == "DO_SOMETHING(X)" and done[0]["parent"] == src
        failed = ec("run", "boom", "kaput", "--json", env=env)
        assert failed.returncode == 1
        err = wait_for(lambda: [c for c in calls_of(env, "echo") if c["status"] == "done"], what="error edge")
        assert err[0]["result"]["error_type"] == "ValueError" and err[0]["result"]["error_message"] == "kaput"
    tree = ok(ec("ls", "call", "--id", src, "-g", env=env)).stdout.splitlines()
    assert tree[0].startswith("ds [done") and tree[1].startswith("    up [done")


def test_fan_in_fires_once_per_flow_and_never_mixes(net):
    env, proc = net
    ok(ec("add", "plug", "-n", "a", "--source", "left", "--target", "add", "--arg", "a", env=env))
    ok(ec("add", "plug", "-n", "b", "--source", "right", "--target", "add", "--arg", "b", env=env))
    fx, fy = str(uuid.uuid4()), str(uuid.uuid4())
    with workers(env, proc, 2):
        for flow, sock, value in ((fx, "left", 1), (fy, "left", 100), (fy, "right", 1000), (fx, "right", 10)):
            ok(ec("run", sock, str(value), env=dict(env, EC_FLOW=flow)))
        adds = wait_for(lambda: len([c for c in calls_of(env, "add") if c["status"] == "done"]) == 2
                        and calls_of(env, "add"), what="two fan-in calls")
        time.sleep(1.0)  # nothing more may fire
        adds = calls_of(env, "add")
    assert sorted(c["result"] for c in adds) == [11, 1100]
    assert {c["flow"] for c in adds} == {fx, fy}


def test_cycle_is_refused(net):
    env, _ = net
    ok(ec("add", "plug", "-n", "p1", "--source", "ds", "--target", "up", env=env))
    ok(ec("add", "plug", "-n", "p2", "--source", "up", "--target", "echo", env=env))
    bad = ec("add", "plug", "-n", "p3", "--source", "echo", "--target", "ds", env=env)
    assert bad.returncode == 2 and "would close a cycle: echo -> ds -> up -> echo" in bad.stderr
    assert ec("add", "plug", "-n", "p4", "--source", "ds", "--target", "ds", env=env).returncode == 2


def test_rewiring_applies_to_new_calls_without_restart(net):
    env, proc = net
    ok(ec("add", "plug", "-n", "p", "--source", "ds", "--target", "up", env=env))
    with workers(env, proc, 1):
        ok(ec("run", "ds", "one", env=env))
        wait_for(lambda: calls_of(env, "up"), what="first target")
        ok(ec("delete", "plug", "p", env=env))
        ok(ec("add", "plug", "-n", "p", "--source", "ds", "--target", "echo", env=env))
        time.sleep(1.2)  # workers re-read plugs at most once a second
        ok(ec("run", "ds", "two", env=env))
        echoed = wait_for(lambda: [c for c in calls_of(env, "echo") if c["status"] == "done"], what="new target")
    assert echoed[0]["result"] == "do_something(two)"
    assert len(calls_of(env, "up")) == 1
