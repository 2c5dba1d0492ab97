"""Sockets on a running processor, served by an agent: a socket's concurrency is how many of
its calls run at once, and a socket added or changed is served without `ec proc restart`."""

from __future__ import annotations

import json

import pytest

from ectool.calls import Client, broker_queue
from ectool.config import load
from ectool.store import open_store
from ectool.store.models import Call
from helpers import agent, ec, env_for, make_repo, wait_for


@pytest.fixture
def setup(tmp_path, broker_url):
    env = env_for(f"sqlite:///{tmp_path / 'ec.db'}", broker_url, EC_AGENT_STALE="5")
    repo = make_repo(tmp_path / "repo")
    for args in (("add", "queue", "-n", "q"), ("trust", "add", str(repo)),
                 ("add", "processor", "-n", "p1", "-g", str(repo), "-m", "pyfi.processors.sample")):
        done = ec(*args, env=env)
        assert done.returncode == 0, done.stderr
    names: list[str] = []
    yield env, names
    if broker_url.startswith("amqp"):
        from ectool.transport import connect

        with connect(broker_url) as t:
            for name in names:
                t.delete_queue(broker_queue(name, env["EC_NAMESPACE"]))


def add_socket(env, names, name, task, *options):
    done = ec("add", "socket", "-n", name, "-q", "q", "-pn", "p1", "-t", task, *options, env=env)
    assert done.returncode == 0, done.stderr
    names.append(name)


def live_workers(env):
    return [w for w in json.loads(ec("ls", "workers", "--json", env=env).stdout) if w["processor"] == "p1"]


def test_socket_concurrency_is_calls_at_once(setup):
    """Issue 21: `-c 5` on a socket is the seed's "number of CPUs occupied", but it only set
    prefetch: five one-second calls ran one after another on the processor's one worker."""
    env, names = setup
    add_socket(env, names, "nap", "sleep", "-c", "5")
    with agent(env, "--cpus", "5"):
        wait_for(lambda: len(live_workers(env)) == 5, timeout=60, what="5 workers for a socket of -c 5")
        client = Client(load(db=env["EC_DB"], broker=env["EC_BROKER"]))
        try:
            ids = client.submit("nap", [([1], {})] * 5)
            outcomes = client.wait(ids, timeout=60)
        finally:
            client.close()
    assert {o.status for o in outcomes.values()} == {"done"}
    open_store(env["EC_DB"])
    spans = [(c.started, c.finished) for c in Call.select().where(Call.id.in_(ids))]
    # all five ran at once: each started before any of them finished
    assert max(s for s, _ in spans) < min(f for _, f in spans), sorted(spans)


def test_a_socket_added_or_changed_is_served_without_a_restart(setup):
    """Issue 21: a socket added to a running processor, or changed on it, was not served or
    applied until `ec proc restart`."""
    env, names = setup
    add_socket(env, names, "nap", "sleep")
    with agent(env, "--cpus", "2"):
        first = ec("run", "nap", "0", "--timeout", "60", env=env)
        assert first.returncode == 0, first.stderr
        add_socket(env, names, "up", "upper")
        added = ec("run", "up", "hello", "--timeout", "45", env=env)
        assert (added.returncode, added.stdout) == (0, "HELLO\n"), added.stderr
        done = ec("update", "socket", "nap", "timeout=0.5", env=env)
        assert done.returncode == 0, done.stderr
        late = wait_for(lambda: (r := ec("run", "nap", "2", "--timeout", "30", env=env)).returncode != 0 and r,
                        timeout=60, what="the new timeout applied")
        assert late.returncode == 1 and "Timeout" in late.stderr, late.stderr


def test_a_processor_without_sockets_waits_for_one_without_crashing(setup):
    """`ec add processor`, then a while later `ec add socket` (the seed's order, typed by
    hand): no worker starts before there is a socket to serve (workers with nothing to
    serve exited and were restarted until the processor was put in error, and adding the
    socket then did not bring it back)."""
    env, names = setup
    with agent(env, "--cpus", "2") as a:
        wait_for(lambda: next(p for p in json.loads(ec("ls", "processors", "--json", env=env).stdout)
                              if p["name"] == "p1")["status"] == "running", timeout=60, what="p1 deployed")
        assert "worker(s) of p1" not in logged(a), logged(a)  # deployed, no worker started
        add_socket(env, names, "up", "upper")
        done = ec("run", "up", "hello", "--timeout", "45", env=env)
        assert (done.returncode, done.stdout) == (0, "HELLO\n"), done.stderr
        assert "exited with" not in logged(a), logged(a)


def logged(agent_proc) -> str:
    """What the agent has written to stderr so far."""
    agent_proc.stderr_log.flush()
    agent_proc.stderr_log.seek(0)
    return agent_proc.stderr_log.read()
