"""Faults on both transports: workers killed mid-task, tasks that kill their own process,
graceful stop. Nothing is lost; every call has exactly one recorded outcome."""

from __future__ import annotations

import json
import os
import re
import signal
import uuid

import pytest

from helpers import (
    build_network,
    dead_letters_where,
    env_for,
    kill_supervisor,
    kill_workers,
    make_repo,
    wait_children,
    wait_for,
    workers,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def net(tmp_path, broker_url):
    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    repo = make_repo(tmp_path / "repo")
    proc = f"sample-{uuid.uuid4().hex[:6]}"
    build_network(db_url, repo, processor=proc)
    env = env_for(db_url, broker_url, EC_DELIVERY_LIMIT="3")
    os.environ.update(EC_DB=db_url, EC_BROKER=broker_url, EC_DELIVERY_LIMIT="3")
    yield env, proc, db_url, broker_url
    for key in ("EC_DB", "EC_BROKER", "EC_DELIVERY_LIMIT"):
        os.environ.pop(key, None)
    if broker_url.startswith("amqp"):
        from ectool.calls import broker_queue
        from ectool.transport import connect
        from helpers import SOCKETS

        with connect(broker_url) as t:
            for name in SOCKETS:
                t.delete_queue(broker_queue(name, os.environ["EC_NAMESPACE"]))


def client():
    from ectool.calls import Client
    from ectool.config import load

    return Client(load())


def running_a_call(pid: int) -> bool:
    from ectool.store.models import Call

    return Call.select().where((Call.status == "running") & (Call.worker_pid == pid)).exists()


def test_kill_9_workers_during_200_calls_loses_nothing(net):
    env, proc, _, _ = net
    c = client()
    try:
        ids = c.submit("sleep", [([0.05, i], {}) for i in range(200)])  # busy workers: kills land mid-call
        with workers(env, proc, 2) as w:
            wait_children(w, 2)
            kill_workers(w, 4, pause=0.3, busy=running_a_call)
            outcomes = c.wait(ids, timeout=120)
    finally:
        c.close()

    assert len(outcomes) == 200
    assert {o.status for o in outcomes.values()} == {"done"}
    assert [outcomes[i].result for i in ids] == list(range(200))
    from ectool.store.models import Call

    rows = list(Call.select().where(Call.id.in_(ids)))
    assert len(rows) == 200 and all(r.status == "done" and r.finished for r in rows)
    assert any(r.attempts > 1 for r in rows), "a killed worker's call should show a second attempt"


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_task_that_kills_its_worker_ends_dead_without_hot_loop(net, how):
    env, proc, _, _ = net
    c = client()
    try:
        with workers(env, proc, 1) as w:
            cid = c.submit("crash", [([how], {})])[0]
            out = c.wait([cid], timeout=90)[cid]
            # the rest of the queue keeps flowing
            assert c.call("add_two", [2, 3], timeout=60).result == 5
            assert w.poll() is None
            w.stderr_log.seek(0)
            delays = [float(d) for d in re.findall(r"restarting in ([0-9.]+)s", w.stderr_log.read())]
    finally:
        c.close()
    assert out.status == "dead" and out.error_type == "DeliveryLimit"
    assert "died 3 times" in out.error_message
    # restarts back off instead of looping hot: the supervisor waited longer each time
    assert len(delays) >= 3 and 0 < delays[0] < delays[1] < delays[2], delays
    from ectool.transport import connect

    with connect(env["EC_BROKER"]) as t:
        assert dead_letters_where(t, lambda d: "delivery limit" in d.reason)


def test_sigterm_finishes_in_flight_and_returns_the_rest(net):
    env, proc, _, _ = net
    c = client()
    try:
        with workers(env, proc, 1, "--prefetch", "4") as w:
            ids = c.submit("sleep", [([1.0, i], {}) for i in range(4)])
            wait_children(w, 1)
            from ectool.store.models import Call

            wait_for(lambda: Call.select().where(Call.id.in_(ids), Call.status == "running").count(),
                     every=0.05, what="a call running")
            w.send_signal(signal.SIGTERM)
            w.wait(30)
        statuses = {r.id: r.status for r in Call.select().where(Call.id.in_(ids))}
        assert list(statuses.values()).count("done") >= 1
        # each call sleeps a second: the one in flight finished, the unstarted ones were
        # returned to the queue, not run
        assert "queued" in statuses.values(), statuses
        assert set(statuses.values()) <= {"done", "queued"}
        with workers(env, proc, 1):
            outcomes = c.wait(ids, timeout=60)
        assert [outcomes[i].result for i in ids] == [0, 1, 2, 3]
        attempts = [r.attempts for r in Call.select().where(Call.id.in_(ids))]
        assert attempts == [1, 1, 1, 1]
    finally:
        c.close()


def test_workers_die_with_a_killed_supervisor(net):
    """kill -9 of `ec worker -c 2` while calls run: both worker processes exit (none is
    left with parent pid 1 consuming calls), and a new supervisor finishes every call."""

    env, proc, _, _ = net
    c = client()
    try:
        ids = c.submit("sleep", [([0.5, i], {}) for i in range(6)])
        with workers(env, proc, 2) as w:
            kids = wait_children(w, 2)
            from ectool.store.models import Call

            wait_for(lambda: Call.select().where(Call.id.in_(ids), Call.status == "running").exists(),
                     timeout=30, every=0.05, what="a call started")
            kill_supervisor(w, kids)
        with workers(env, proc, 2):
            outcomes = c.wait(ids, timeout=60)
        assert [outcomes[i].result for i in ids] == list(range(6))
    finally:
        c.close()


def test_ls_calls_shows_every_outcome(net):
    env, proc, _, _ = net
    from helpers import ec

    c = client()
    try:
        with workers(env, proc, 1):
            ids = c.submit("add_two", [([i, i], {}) for i in range(5)])
            c.wait(ids, timeout=60)
    finally:
        c.close()
    rows = json.loads(ec("ls", "calls", "--socket", "add_two", "--json", env=env).stdout)
    assert sorted(r["result"] for r in rows) == [0, 2, 4, 6, 8]
