"""Many hosts on one machine: agents with their own --node (and EC_HOME, as separate hosts
have), killed with kill -9, cordoned and drained. What a user sees is asserted through
``ec``: ls workers/nodes --json, exit codes, every call's outcome."""

from __future__ import annotations

import json
import threading

import pytest

from helpers import agent, ec, ec_all, env_for, host_envs, kill_host, make_repo, wait_for


@pytest.fixture
def hosts(tmp_path, request):
    """(env, host_env): a store (SQLite, or PostgreSQL when the test asks for db_url) and an
    embedded broker with processor p1 (sockets sleep and pid); host_env(NAME) is the
    environment of an agent on node NAME (its own EC_HOME: its own deployments)."""
    db = request.getfixturevalue("db_url") if "db_url" in request.fixturenames else f"sqlite:///{tmp_path / 'ec.db'}"
    env = env_for(db, f"sqlite:///{tmp_path / 'queue.db'}", EC_AGENT_STALE="3")
    repo = make_repo(tmp_path / "repo")
    ec_all(env, ("add", "queue", "-n", "q"), ("trust", "add", str(repo)),
           ("add", "processor", "-n", "p1", "-g", str(repo), "-m", "pyfi.processors.sample", "-c", "2"),
           ("add", "socket", "-n", "sleep", "-q", "q", "-pn", "p1", "-t", "sleep"),
           ("add", "socket", "-n", "pid", "-q", "q", "-pn", "p1", "-t", "whoami"))

    host_env = host_envs(tmp_path, env)
    return env, host_env


def ls(env, kind):
    done = ec("ls", kind, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def workers_on(env, node, status="running"):
    return [w for w in ls(env, "workers") if w["host"] == node and w["status"] == status]


def node_row(env, name):
    """Node NAME as ec ls nodes shows it ({} before its agent registered it)."""
    return next((n for n in ls(env, "nodes") if n["name"] == name), {})


def submit(env, n, seconds="0.1"):
    ids = []
    for i in range(n):
        done = ec("run", "--no-wait", "sleep", seconds, str(i), env=env)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    return ids


def all_done(env, ids):
    done = ec("wait", *ids, "--timeout", "120", env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(ec("show", "call", i, "--json", env=env).stdout) for i in ids]
    assert {r["status"] for r in rows} == {"done"}


def test_a_dead_hosts_workers_are_lost_and_its_work_replaced(hosts, db_url):
    env, host_env = hosts
    with agent(host_env("n1"), "--name", "a1", "--node", "n1", "--cpus", "1") as a1:
        wait_for(lambda: workers_on(env, "n1"), timeout=120, what="a worker on n1")
        with agent(host_env("n2"), "--name", "a2", "--node", "n2", "--cpus", "2"):
            wait_for(lambda: workers_on(env, "n2"), timeout=120, what="the second worker, on n2")
            ids = submit(env, 10, "0.3")
            dead = workers_on(env, "n1")
            kill_host(a1)
            # the dead host's worker is shown lost once heartbeats age (EC_AGENT_STALE=3),
            # never running again; its processor is re-placed on the live host
            lost = wait_for(lambda: [w for w in ls(env, "workers") if w["pid"] == dead[0]["pid"]
                                     and w["status"] == "lost"], what="n1's worker shown lost")
            assert lost[0]["host"] == "n1"
            wait_for(lambda: len(workers_on(env, "n2")) == 2, timeout=120, what="p1 re-placed on n2")
            assert not workers_on(env, "n1")
            nodes = {n["name"]: n for n in ls(env, "nodes")}
            assert nodes["n1"]["state"] == "lost" and nodes["n1"]["workers"] == 0
            assert nodes["n2"]["state"] == "online" and nodes["n2"]["processors"] == ["p1x2"]
            agents = {a["name"]: a for a in ls(env, "agents")}
            assert (agents["a1"]["status"], agents["a2"]["processors"]) == ("lost", ["p1x2"])
            all_done(env, ids)


def agent_row(env, name):
    return next((a for a in ls(env, "agents") if a["name"] == name), {})


def test_cordon_places_nothing_new_and_uncordon_does(hosts):
    env, host_env = hosts
    with agent(host_env("n2"), "--name", "a2", "--node", "n2", "--cpus", "3", "--interval", "0.5"):
        wait_for(lambda: len(workers_on(env, "n2")) == 2, timeout=120, what="2 workers on n2")
        done = ec("node", "cordon", "n2", env=env)
        assert done.returncode == 0 and "node n2: cordoned" in done.stderr, done.stderr
        assert node_row(env, "n2")["state"] == "cordoned"
        assert ec("update", "processor", "p1", "concurrency=3", env=env).returncode == 0
        for _ in range(2):  # two rounds of the agent's loop after the change (each beats)
            beat = agent_row(env, "a2")["heartbeat"]
            wait_for(lambda beat=beat: agent_row(env, "a2")["heartbeat"] > beat, what="a round of a2")
        assert agent_row(env, "a2")["processors"] == ["p1x2"]  # a free core, but cordoned
        with agent(host_env("n1"), "--name", "a1", "--node", "n1", "--cpus", "1"):
            wait_for(lambda: workers_on(env, "n1"), timeout=120, what="the third worker, on n1")
            assert len(workers_on(env, "n2")) == 2
        done = ec("node", "uncordon", "n2", env=env)
        assert done.returncode == 0 and "node n2: online" in done.stderr, done.stderr
        wait_for(lambda: len(workers_on(env, "n2")) == 3, timeout=60, what="the third worker back on n2")
        assert node_row(env, "n2")["processors"] == ["p1x3"]


def test_drain_moves_work_make_before_break_and_loses_no_call(hosts, db_url):
    env, host_env = hosts
    with agent(host_env("n1"), "--name", "a1", "--node", "n1", "--cpus", "2"):
        wait_for(lambda: len(workers_on(env, "n1")) == 2, timeout=120, what="2 workers on n1")
        with agent(host_env("n2"), "--name", "a2", "--node", "n2", "--cpus", "2"):
            wait_for(lambda: node_row(env, "n2").get("state") == "online", what="n2 online")
            ids = submit(env, 10, "0.3")
            stop = threading.Event()
            more: list[str] = []

            def keep_calling() -> None:  # calls submitted all through the drain
                while not stop.is_set():
                    more.extend(submit(env, 1, "0.2"))

            caller = threading.Thread(target=keep_calling)
            caller.start()
            try:
                drained = ec("node", "drain", "n1", "--wait", "--timeout", "150", "--json", env=env, timeout=200)
            finally:
                stop.set()
                caller.join()
            assert drained.returncode == 0, drained.stderr
            assert json.loads(drained.stdout)["state"] == "drained"
            assert node_row(env, "n1")["state"] == "drained"
            assert len(workers_on(env, "n2")) == 2 and not workers_on(env, "n1")
            # make-before-break: when each old worker stopped, as many replacements had started
            rows = _all_workers(env)
            old = sorted(w["heartbeat"] for w in rows if w["host"] == "n1" and w["status"] == "stopped")
            new = sorted(w["created"] for w in rows if w["host"] == "n2")
            assert len(old) == 2 and len(new) == 2, rows
            for i, stopped in enumerate(old):
                assert sum(c <= stopped for c in new) >= i + 1, (old, new)
            all_done(env, ids + more)
            assert more, "no call was submitted during the drain"
            done = ec("node", "uncordon", "n1", env=env)
            assert done.returncode == 0 and "node n1: online" in done.stderr


def _all_workers(env):
    """Every worker row, stopped ones included, with its creation time (from the store)."""
    from ectool.store import open_store
    from ectool.store.models import Worker

    open_store(env["EC_DB"])
    return [{"host": w.host, "status": w.status, "created": w.created, "heartbeat": w.heartbeat}
            for w in Worker.select()]


def test_drain_without_room_elsewhere_keeps_serving_and_times_out(hosts):
    env, host_env = hosts
    with agent(host_env("n1"), "--name", "a1", "--node", "n1", "--cpus", "2"):
        wait_for(lambda: len(workers_on(env, "n1")) == 2, timeout=120, what="2 workers on n1")
        done = ec("node", "drain", "n1", "--wait", "--timeout", "3", env=env)
        assert done.returncode == 4, done.stderr
        assert "waiting for capacity on other nodes (p1 2 worker(s) short)" in done.stderr and "p1x2" in done.stderr
        assert node_row(env, "n1")["state"] == "draining"
        assert len(workers_on(env, "n1")) == 2
        assert ec("run", "pid", "--timeout", "60", env=env).returncode == 0  # still serving
        assert ec("node", "uncordon", "n1", env=env).returncode == 0


def test_node_commands_refuse_unknown_hosts(hosts):
    env, _ = hosts
    for action in ("drain", "cordon", "uncordon"):
        done = ec("node", action, "nowhere", env=env)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            "ec: no node named 'nowhere' (known: none; see ec ls nodes)"], done.stderr


def test_one_agent_name_on_two_nodes_is_refused(hosts):
    env, host_env = hosts
    with agent(host_env("n1"), "--name", "same", "--node", "n1") as first:
        wait_for(lambda: ls(env, "agents"), what="agent online")
        second = ec("agent", "run", "--name", "same", "--node", "n2", env=host_env("n2"))
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1].startswith(
            "ec: agent 'same' is already running on node 'n1'"), second.stderr
        assert first.poll() is None
        assert {a["name"]: a["node"] for a in ls(env, "agents")} == {"same": "n1"}


def test_a_processor_pinned_to_a_drained_node_waits_for_uncordon(hosts):
    env, host_env = hosts
    assert ec("update", "processor", "p1", "host=n1", "concurrency=1", env=env).returncode == 0
    with agent(host_env("n1"), "--name", "a1", "--node", "n1", "--cpus", "1"):
        wait_for(lambda: workers_on(env, "n1"), timeout=120, what="p1 on n1")
        done = ec("node", "drain", "n1", "--wait", "--timeout", "60", env=env)
        assert done.returncode == 0 and "node n1: drained" in done.stderr, done.stderr
        assert not workers_on(env, "n1")
        queued = submit(env, 1, "0")
        late = ec("wait", *queued, "--timeout", "2", env=env)
        assert late.returncode == 4  # waits, queued: not failed, not lost
        assert ec("node", "uncordon", "n1", env=env).returncode == 0
        all_done(env, queued)
