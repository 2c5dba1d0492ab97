"""Issue 16: pipelined submits from the Python API. A socket call returns its handle at
once; the call is durable once ``h.sent()``/``h.get()``/``flush()``/``with batch():``/exit
has returned; a call that could not be made durable raises SubmitError naming it; a
process killed mid-loop leaves no queued row without a message once recovery has run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from contextlib import contextmanager

import pytest

from ectool.store import open_store
from ectool.store.models import Call
from helpers import sample_network, wait_for, workers


def py(env, code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` (using ectool.api) in a fresh interpreter with ``env``."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def rows(env) -> list[Call]:
    open_store(env["EC_DB"])
    return list(Call.select(Call.id, Call.status, Call.host, Call.attempts, Call.result))


def test_a_loop_of_calls_gets_every_result(tmp_path, broker_url):
    with sample_network(tmp_path, broker_url) as (env, proc), workers(env, proc, 2):
        done = py(env, """
            from ectool.api import Socket
            add = Socket(name="add_two")
            handles = [add(i, 1) for i in range(300)]
            assert all(h.sent() is h for h in handles)
            print(sum(h.get(timeout=60) for h in handles))
        """)
    assert (done.returncode, done.stdout) == (0, f"{sum(range(1, 301))}\n"), done.stderr
    assert {r.status for r in rows(env)} == {"done"}


@pytest.mark.parametrize("how", ["flush()", "with", "exit", "sync"])
def test_calls_are_durable_once_flushed(tmp_path, how):
    """No workers: what the store holds once the program says the calls are durable."""
    with sample_network(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}") as (env, _):
        body = {"flush()": "hs = [add(i, 1) for i in range(50)]\napi.flush()",
                "with": "with api.batch():\n    hs = [add(i, 1) for i in range(50)]",
                "exit": "hs = [add(i, 1) for i in range(50)]",
                "sync": "hs = [add(i, 1) for i in range(50)]\nassert all(h._ticket is None for h in hs)"}[how]
        code = ("from ectool import api\nadd = api.Socket(name='add_two')\n" + body
                + "\nprint(' '.join(h.id for h in hs))\n")
        if how == "sync":
            env = dict(env, EC_SUBMIT="sync")
        done = py(env, code)
        assert done.returncode == 0, done.stderr
        ids = done.stdout.split()
        stored = {r.id: r for r in rows(env)}
        assert sorted(stored) == sorted(ids) and len(ids) == 50
        assert {(r.status, r.host) for r in stored.values()} == {("queued", None)}


def test_a_call_that_cannot_be_stored_raises_naming_it(tmp_path):
    with sample_network(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}") as (env, _):
        done = py(env, f"""
            import sqlite3
            from ectool import api
            from ectool.errors import SubmitError
            add = api.Socket(name="add_two")
            add(0, 0).sent()
            sqlite3.connect({str(tmp_path / 'ec.db')!r}).execute('ALTER TABLE "call" RENAME TO gone')
            h = add(1, 1)
            try:
                h.sent()
            except SubmitError as exc:
                assert h.id in str(exc) and exc.call_ids == [h.id], exc
                print("refused", exc.exit_code)
            else:
                print("sent?")
            try:
                api.flush()
            except SubmitError as exc:
                print("flush", h.id in exc.call_ids)
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["refused 3", "flush True"], done.stdout


@contextmanager
def network_on(tmp_path, db_url, broker_url):
    """The sample network on the store ``db_url`` (SQLite or PostgreSQL) and ``broker_url``."""
    from ectool.calls import broker_queue
    from ectool.transport import connect
    from helpers import SOCKETS, build_network, env_for, make_repo

    proc = f"sample-{uuid.uuid4().hex[:6]}"
    build_network(db_url, make_repo(tmp_path / "repo"), processor=proc)
    env = env_for(db_url, broker_url)
    try:
        yield env, proc
    finally:
        if broker_url.startswith("amqp"):
            with connect(broker_url) as t:
                for name in SOCKETS:
                    t.delete_queue(broker_queue(name, env["EC_NAMESPACE"]))


def test_a_submitter_killed_mid_loop_leaves_every_call_an_outcome(tmp_path, db_url, broker_url):
    """kill -9 between Socket.__call__ and sent(): recovery publishes what may not have
    been, and every row ends done, none run twice."""
    from ectool.config import load
    from ectool.submitter import recover

    with network_on(tmp_path, db_url, broker_url) as (env, proc):
        loop = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
            from ectool.api import Socket
            add = Socket(name="add_two")
            for i in range(10 ** 6):
                add(i, 1)
        """)], env=env, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(rows(env)) >= 500, timeout=60, what="calls stored")
        finally:
            os.kill(loop.pid, signal.SIGKILL)
            loop.wait()
        config = load(db=env["EC_DB"], broker=env["EC_BROKER"], namespace=env["EC_NAMESPACE"])

        def settled() -> bool:
            # as the agents do every 30 s: the killed process's last statement may still
            # commit after its death on PostgreSQL, so one recovery is not always the last
            recover(config)
            return {r.status for r in rows(env)} == {"done"}

        with workers(env, proc, 2):
            wait_for(settled, timeout=120, what="every call done")
        assert not [r for r in rows(env) if r.host and r.host.startswith("submitting:")]
    stored = rows(env)
    assert all(r.attempts == 1 for r in stored), sorted({r.attempts for r in stored})


def test_get_over_many_handles_reads_replies_not_the_store(tmp_path, broker_url):
    with sample_network(tmp_path, broker_url) as (env, proc), workers(env, proc, 2):
        done = py(env, """
            from ectool import calls
            from ectool.api import Socket
            reads = []
            calls.QUIET = calls.QUIET_MAX = calls.FORCED = 3600.0  # a missing reply would hang, not poll
            real = calls.outcomes
            calls.outcomes = lambda ids: reads.append(len(list(ids))) or real(ids)
            add = Socket(name="add_two")
            handles = [add(i, 1) for i in range(200)]
            print(sum(h.get(timeout=60) for h in handles), reads)
        """)
    assert (done.returncode, done.stdout) == (0, f"{sum(range(1, 201))} []\n"), done.stderr


def test_map_and_starmap_yield_results_in_order_with_bounded_calls_in_flight(tmp_path):
    with sample_network(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}") as (env, proc), workers(env, proc, 2):
        done = py(env, """
            import itertools
            from ectool.api import RemoteError, Socket
            add, echo = Socket(name="add_two"), Socket(name="echo")
            print(list(add.starmap(((i, 1) for i in range(300)), window=40)) == [i + 1 for i in range(300)])
            print(list(echo.map(["a", b"b\\n", [1, 2], {"k": None}])))
            read = itertools.count()
            endless = add.starmap(((next(read), 1) for _ in itertools.count()), window=20)
            first = [next(endless) for _ in range(5)]
            print(first, next(read) <= 5 + 2 * 20 + 2)
            endless.close()
            try:
                list(Socket(name="boom").map([1]))
            except RemoteError as exc:
                print("raised", exc.remote_type)
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True", "['a', b'b\\n', [1, 2], {'k': None}]", "[1, 2, 3, 4, 5] True",
                                        "raised ValueError"], done.stdout


def test_dead_tag_tells_dead_submitters_on_this_host():
    from ectool.submitter import dead_tag, process_start

    me = f"submitting:h1:{os.getpid()}:{process_start(os.getpid())}"
    assert not dead_tag(me, "h1")  # alive
    assert not dead_tag(me, "h2")  # another host's: its own agents judge it
    assert dead_tag(f"submitting:h1:{os.getpid()}:1.00", "h1")  # the pid was reused
    assert dead_tag("submitting:h1:999999999:1.00", "h1")  # no such process
    assert dead_tag("submitting:h1:x:1.00", "h1")  # unreadable
    assert not dead_tag("submitting:h1", "h1")


def test_an_agent_republishes_a_dead_submitters_calls(tmp_path, broker_url):
    """Rows a killed submitter committed but never published: the agent on its host sends
    them (its schedule loop runs the recovery), and they run once."""
    from ectool.events import HOST
    from ectool.store.ledger import insert_calls
    from ectool.store.models import now
    from ectool.submitter import TAGGED_COLUMNS
    from helpers import agent

    with sample_network(tmp_path, broker_url) as (env, _):
        open_store(env["EC_DB"])
        stamp, tag = now(), f"submitting:{HOST}:999999999:1.00"
        ids = [f"dead-submitter-{i}" for i in range(20)]
        insert_calls([(cid, stamp, stamp, "add_two", None, cid, None, tag, "queued", 0,
                       f'{{"args": [{i}, 1], "kwargs": {{}}}}', stamp) for i, cid in enumerate(ids)],
                     TAGGED_COLUMNS)
        with agent(env, "--cpus", "2"):
            wait_for(lambda: {r.status for r in rows(env)} == {"done"}, timeout=120, what="the calls run")
    stored = {r.id: r for r in rows(env)}
    assert sorted(int(stored[cid].result) for cid in ids) == list(range(1, 21))
    assert all(r.attempts == 1 and not (r.host or "").startswith("submitting:") for r in stored.values())


def test_lost_replies_cost_one_store_read_not_one_per_handle(tmp_path, broker_url):
    """Replies lost (an inbox that overflowed while a loop submitted): the first wait that
    reads the store reads every expected call's outcome, so the next handles need none."""
    with sample_network(tmp_path, broker_url) as (env, proc), workers(env, proc, 2):
        done = py(env, """
            import itertools, time
            from ectool import api, calls
            from ectool.store.models import Call
            reads = []
            calls.QUIET = 0.2
            real = calls.outcomes
            calls.outcomes = lambda ids: reads.append(len(list(ids))) or real(ids)
            add = api.Socket(name="add_two")
            handles = [add(i, 1) for i in range(200)]
            api.flush()
            inbox, n = api.client().inbox, itertools.count()
            get = inbox.get
            inbox.get = lambda timeout: None if (b := get(timeout)) is not None and next(n) % 2 else b
            while Call.select().where(Call.status == "done").count() < 200:  # every outcome recorded
                time.sleep(0.05)
            print(sum(h.get(timeout=60) for h in handles), len(reads) <= 2, reads)
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == [str(sum(range(1, 201))), "True"], done.stdout
