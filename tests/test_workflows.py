"""Workflows through real workers on both transports: the seed's example, nesting,
failures, durability when the client exits, and a join under worker kills."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT, ec, kill_workers, sample_network, wait_children, workers


@pytest.fixture
def net(tmp_path, broker_url, monkeypatch):
    from ectool import api

    with sample_network(tmp_path, broker_url) as (env, proc):
        for key in ("EC_DB", "EC_BROKER"):
            monkeypatch.setenv(key, env[key])  # the in-process API uses the same store and broker
        try:
            yield env, proc
        finally:
            api.close()


def ds_(*data):
    """What the sample's do_something returns, computed locally to build expectations."""
    def show(v):
        return "[" + ", ".join(show(x) for x in v) + "]" if isinstance(v, list) else str(v)
    return "do_something(" + ", ".join(show(d) for d in data) + ")"


def test_seed_example_runs_unchanged(net):
    env, proc = net
    from ectool.api import Socket, funnel, parallel, pipeline

    do_something = Socket(name="do_something").p
    with workers(env, proc, 2):
        # --- the seed's example, verbatim apart from the imports above ---
        _pipeline = pipeline([
            do_something("One"),
            do_something("Two"),
            parallel([
                do_something("Four"),
                do_something("Five"),
            ]),
            do_something("Three")])
        _parallel = parallel([
            _pipeline,
            do_something("Six"),
            do_something("Seven")])
        _funnel = funnel([
            do_something("Eight"),
            _parallel,
            do_something("Nine")])
        result = _funnel(do_something("Four")).get(timeout=120)
    one = ds_("One")
    two = ds_(one, "Two")
    par = [ds_(two, "Four"), ds_(two, "Five")]
    pipe = ds_(par, "Three")
    expected = ds_([ds_("Eight"), [pipe, ds_("Six"), ds_("Seven")], ds_("Nine")], "Four")
    assert result == expected


def test_pipeline_prepends_and_parallel_keeps_order(net):
    env, proc = net
    from ectool.api import Socket, parallel, pipeline

    add = Socket(name="add_two").p
    total = Socket(name="total").p
    with workers(env, proc, 2):
        assert pipeline([add(1, 2), add(10)]).get(timeout=60) == 13
        assert parallel([add(i, i) for i in range(6)]).get(timeout=60) == [0, 2, 4, 6, 8, 10]
        assert pipeline([add(1, 1), parallel([add(1), add(2), add(3)]), total(100)]).get(timeout=60) == 3 + 4 + 5 + 100
        assert parallel([]).get(timeout=60) == []
        assert pipeline([parallel([add(1, 1), pipeline([add(2, 2), add(1)])]), total()]).get(timeout=60) == 7


def test_member_failure_fails_the_workflow_with_its_error(net):
    env, proc = net
    from ectool.api import RemoteError, Socket, parallel, pipeline

    add, boom = Socket(name="add_two").p, Socket(name="boom").p
    with workers(env, proc, 1):
        handle = pipeline([parallel([add(1, 1), boom("bad member")]), add(1)]).delay()
        with pytest.raises(RemoteError) as info:
            handle.get(timeout=60)
    err = info.value
    assert err.remote_type == "ValueError" and "bad member" in err.remote_message
    assert "raise ValueError" in err.remote_traceback
    tree = json.loads(ec("ls", "call", "--id", handle.id, "-g", "--json", env=env).stdout)
    assert tree["status"] == "failed"
    par = tree["children"][0]
    assert sorted(c["status"] for c in par["children"]) == ["done", "failed"]  # the other result stays


def test_workflow_survives_its_client_and_cli_sees_the_tree(net):
    env, proc = net
    script = (
        "import os\n"
        "from ectool.api import Socket, funnel\n"
        "add = Socket(name='add_two').p\n"
        "total = Socket(name='total').p\n"
        "h = funnel([add(i, 1) for i in range(5)])(total(1000))\n"
        "print(h.id, flush=True)\n"
        "os._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    wf = done.stdout.strip()
    assert ec("result", wf, env=env).returncode == 4  # nothing ran yet: no worker
    with workers(env, proc, 1):
        waited = ec("wait", wf, "--timeout", "60", env=env)
    assert (waited.returncode, waited.stdout) == (0, "1015\n")
    assert ec("result", wf, env=env).stdout == "1015\n"
    tree = ec("ls", "call", "--id", wf, "-g", env=env).stdout.splitlines()
    assert tree[0].startswith("funnel [done")
    assert tree[1].startswith("    parallel [done") and tree[-1].startswith("    total [done")
    assert sum(1 for line in tree if line.startswith("        add_two [done")) == 5


@pytest.mark.slow
def test_kill_9_during_a_200_member_funnel_final_runs_once(net):
    env, proc = net
    from ectool.api import Socket, funnel
    from ectool.store.models import Call

    sleep, total = Socket(name="sleep").p, Socket(name="total").p
    handle = funnel([sleep(0.01, i) for i in range(200)])(total())
    with workers(env, proc, 2) as w:
        wait_children(w, 2)
        kill_workers(w, 3)
        assert handle.get(timeout=120) == sum(range(200))
    finals = list(Call.select().where((Call.root == handle.id) & (Call.socket == "total")))
    assert len(finals) == 1 and finals[0].attempts == 1 and finals[0].status == "done"
    members = Call.select().where((Call.root == handle.id) & (Call.socket == "sleep"))
    assert members.count() == 200 and all(m.status == "done" for m in members)


def test_unknown_socket_in_a_workflow_is_refused_before_submitting(net):
    from ectool.api import Signature, pipeline
    from ectool.errors import NotFound
    from ectool.store.models import Call

    with pytest.raises(NotFound):
        pipeline([Signature("add_two", [1, 2]), Signature("nope")]).delay()
    assert Call.select().count() == 0


def test_members_of_one_batch_join_together_and_fire_once(db_url, tmp_path, monkeypatch):
    """The engine fills a join with a whole batch of members at once: duplicates within a
    batch and across batches fill nothing twice, the final step is sent exactly once, with
    the values in member order."""
    from ectool.calls import broker_queue
    from ectool.config import load
    from ectool.engine import Engine
    from ectool.messages import decode
    from ectool.outcome import Outcome
    from ectool.store.models import Call
    from ectool.transport import open_transport
    from ectool.workflow import node_id
    from helpers import build_network, make_repo

    build_network(db_url, make_repo(tmp_path / "repo"))
    monkeypatch.setenv("EC_DB", db_url)
    monkeypatch.setenv("EC_BROKER", f"sqlite:///{tmp_path / 'queue.db'}")
    config = load()
    transport = open_transport(config)
    engine = Engine(transport, namespace=config.namespace)
    members = [{"t": "call", "socket": "noop", "args": [], "kwargs": {}} for _ in range(6)]
    wf = engine.submit({"t": "pipe", "steps": [{"t": "par", "members": members},
                                               {"t": "call", "socket": "total", "args": [], "kwargs": {}}]})
    consumer = transport.consumer([broker_queue("noop", config.namespace)], prefetch=10)
    msgs = sorted((decode(consumer.get(5).body) for _ in range(6)), key=lambda m: m.cont["path"])
    final_queue = broker_queue("total", config.namespace)

    def done(i):
        return msgs[i], Outcome(msgs[i].id, "done", result=i * 10)

    engine.on_outcomes([done(0), done(1), done(2), done(0)])
    assert transport.depth(final_queue) == 0
    assert Call.get_by_id(node_id(wf, [0])).status == "running"
    engine.on_outcomes([done(3), done(4), done(5), done(1)])
    assert transport.depth(final_queue) == 1
    par = Call.get_by_id(node_id(wf, [0]))
    assert (par.status, json.loads(par.result)) == ("done", [0, 10, 20, 30, 40, 50])
    engine.on_outcomes([done(5)])  # a late redelivery of a member: the join fired already
    assert transport.depth(final_queue) == 1
    final = decode(transport.consumer([final_queue]).get(5).body)
    assert (final.id, final.args) == (node_id(wf, [1]), [[0, 10, 20, 30, 40, 50]])
    consumer.close()
    transport.close()
