"""Fault-injection scenarios, each returning a checker :class:`~history.Report`.

Used by ``pytest -m faults`` (tests/test_fault_suite.py) and ``python bench/faults.py``
(prints the table). Every process a scenario starts is stopped by pid, even on failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from helpers import (
    agent,
    build_network,
    env_for,
    kill_supervisor,
    kill_workers,
    make_repo,
    wait_children,
    wait_for,
    workers,
)
from history import History, check, settle

SOCKETS = {"mark": ("mark", {"concurrency": 8}), "crash": ("crash", {}), "hog": ("hog", {}),
           "slow": ("sleep", {"timeout": 1.0})}


@dataclass
class Ctx:
    tmp: Path
    db_url: str
    broker_url: str
    env: dict
    proc: str
    history: History

    @property
    def kind(self) -> str:
        return "amqp" if self.broker_url.startswith("amqp") else "sqlite"

    @property
    def store(self) -> str:
        return "postgresql" if self.db_url.startswith("postgres") else "sqlite"


def setup(tmp: Path, broker_url: str, delivery_limit: int = 5, db_url: str | None = None) -> Ctx:
    tmp.mkdir(parents=True, exist_ok=True)
    db_url = db_url or f"sqlite:///{tmp / 'ec.db'}"
    repo = make_repo(tmp / "repo")
    proc = f"faults-{uuid.uuid4().hex[:6]}"
    build_network(db_url, repo, processor=proc, sockets=SOCKETS)
    env = env_for(db_url, broker_url, EC_DELIVERY_LIMIT=str(delivery_limit))
    for key in ("EC_DB", "EC_BROKER", "EC_DELIVERY_LIMIT", "EC_NAMESPACE"):
        os.environ[key] = env[key]
    marks = tmp / "marks"
    marks.mkdir()
    return Ctx(tmp, db_url, broker_url, env, proc, History(marks))


def cleanup(ctx: Ctx) -> None:
    """Delete the scenario's RabbitMQ queues (sockets and agent control queues)."""
    if ctx.kind != "amqp":
        return
    from ectool.agents import control_queue
    from ectool.calls import broker_queue
    from ectool.store.models import Agent
    from ectool.transport import connect

    ns = ctx.env["EC_NAMESPACE"]
    with connect(ctx.broker_url) as t:
        for name in SOCKETS:
            t.delete_queue(broker_queue(name, ns))
        for a in Agent.select(Agent.name):
            t.delete_queue(control_queue(a.name, ns))


def client():
    from ectool.calls import Client
    from ectool.config import load

    return Client(load())


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def worker_kill9(ctx: Ctx, calls: int = 1000, kills: int = 5) -> object:
    """kill -9 a worker process mid-task, repeatedly, during CALLS calls."""
    started = time.monotonic()
    c = client()
    try:
        ctx.history.submit(c, "mark", keys("k", calls), 0.002)
        with workers(ctx.env, ctx.proc, 2) as w:
            wait_children(w, 2)
            kill_workers(w, kills)
            settle(ctx.history, 120)
    finally:
        c.close()
    return check(ctx.history, f"worker kill -9 x{kills} ({ctx.kind})", started)


def agent_kill9(ctx: Ctx, calls: int = 1000) -> object:
    """kill -9 the agent during CALLS calls (its workers exit), then restart it."""
    from ectool.store.models import Processor

    Processor.update(concurrency=2).where(Processor.name == ctx.proc).execute()
    started = time.monotonic()
    c = client()
    try:
        ctx.history.submit(c, "mark", keys("a", calls), 0.002)
        with agent(ctx.env, "--cpus", "2") as a:
            kids = wait_for(lambda: len(psutil.Process(a.pid).children()) >= 2 and psutil.Process(a.pid).children(),
                            timeout=60, what="agent workers")
            time.sleep(1.0)
            os.kill(a.pid, signal.SIGKILL)
            a.wait()
            _, alive = psutil.wait_procs(kids, timeout=15)
            assert not alive, "workers outlived their agent"
        with agent(ctx.env, "--cpus", "2"):
            settle(ctx.history, 120)
    finally:
        c.close()
    return check(ctx.history, f"agent kill -9 + restart ({ctx.kind})", started)


def supervisor_kill9(ctx: Ctx, calls: int = 1000) -> object:
    """kill -9 the `ec worker -c 2` supervisor during CALLS calls: its workers exit with it
    (found by pid: no orphan left consuming), and a new supervisor finishes every call."""
    started = time.monotonic()
    c = client()
    try:
        ctx.history.submit(c, "mark", keys("s", calls), 0.002)
        with workers(ctx.env, ctx.proc, 2) as w:
            kids = wait_children(w, 2)
            wait_for(lambda: len(list(ctx.history.marks.iterdir())) >= 10, timeout=60, what="calls running")
            kill_supervisor(w, kids)
        with workers(ctx.env, ctx.proc, 2):
            settle(ctx.history, 120)
    finally:
        c.close()
    return check(ctx.history, f"ec worker supervisor kill -9 ({ctx.kind})", started)


def _restart_midflow(ctx: Ctx, calls: int, stop_cmd: list[str], start_cmd: list[str], down: float,
                     serve=None, workers_kept: int | None = None) -> None:
    """Producers and workers running (``serve()``, default ``ec worker -c 2``); run STOP_CMD,
    wait DOWN seconds, run START_CMD; settle; check the server survived and, with
    WORKERS_KEPT, that no worker was replaced (checked while the server runs, so a failure
    shows its log)."""
    c = client()
    stop = threading.Event()

    def produce():
        for n in range(0, calls, 50):
            ctx.history.submit(c, "mark", keys(f"r{n}", 50), 0.001)
            time.sleep(0.05)
            if stop.is_set():
                return

    from ectool.store.models import Worker

    try:
        with (serve or (lambda: workers(ctx.env, ctx.proc, 2)))() as server:
            # the outage is to come mid-flow, not while a worker starts (one that cannot reach
            # the store at startup exits and is restarted with backoff: it might miss the flow)
            wait_for(lambda: Worker.select().where(Worker.status == "running").count() >= 2, timeout=60,
                     what="workers registered")
            t = threading.Thread(target=produce)
            t.start()
            time.sleep(0.5)
            try:
                subprocess.run(stop_cmd, check=True, capture_output=True, timeout=120)
                time.sleep(down)
            finally:
                subprocess.run(start_cmd, check=True, capture_output=True, timeout=120)
            t.join(180)
            settle(ctx.history, 180)
            assert server.poll() is None, "the worker supervisor or agent died"
            if workers_kept is not None:
                from ectool.store import close_store

                close_store()  # our own connection died with the server
                rows = [(w.pid, w.status) for w in Worker.select()]
                assert len(rows) == workers_kept, f"a worker was replaced during the store outage: {rows}"
    finally:
        stop.set()
        c.close()


def rabbitmq_restart(ctx: Ctx, calls: int = 600) -> object:
    """rabbitmqctl stop_app / start_app with producers and workers running."""
    assert ctx.kind == "amqp"
    started = time.monotonic()
    _restart_midflow(ctx, calls, ["rabbitmqctl", "stop_app"], ["rabbitmqctl", "start_app"], 3.0)
    return check(ctx.history, "RabbitMQ stop_app/start_app (amqp)", started)


def pg_cluster() -> list[str]:
    """The pg_ctlcluster arguments naming the local cluster (VERSION main)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def postgres_restart(ctx: Ctx, calls: int = 600) -> object:
    """Stop PostgreSQL (the store) for a few seconds mid-flow: workers wait, then catch up."""
    assert ctx.store == "postgresql"
    started = time.monotonic()
    # the workers wait the outage out: no crash, so no replacement worker rows
    _restart_midflow(ctx, calls, [*pg_cluster(), "stop", "-m", "fast"], [*pg_cluster(), "start"], 6.0,
                     workers_kept=2)
    return check(ctx.history, f"PostgreSQL restart ({ctx.kind})", started)


def postgres_restart_agent(ctx: Ctx, calls: int = 600) -> object:
    """The same PostgreSQL outage under an agent: it and its workers wait, nothing restarts."""
    from ectool.store.models import Processor

    assert ctx.store == "postgresql"
    Processor.update(concurrency=2).where(Processor.name == ctx.proc).execute()
    started = time.monotonic()

    @contextmanager
    def serve():
        with agent(ctx.env, "--cpus", "2") as proc:
            wait_for(lambda: len(psutil.Process(proc.pid).children()) >= 2, timeout=60, what="agent workers")
            yield proc

    _restart_midflow(ctx, calls, [*pg_cluster(), "stop", "-m", "fast"], [*pg_cluster(), "start"], 6.0, serve,
                     workers_kept=2)
    return check(ctx.history, f"PostgreSQL restart, agent ({ctx.kind})", started)



LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def store_lock(ctx: Ctx, calls: int = 300, seconds: float | None = None) -> object:
    """Lock the SQLite store exclusively for SECONDS mid-flow: workers wait, then catch up.

    30 s on the embedded default (SQLite queue too), 10 s with RabbitMQ (the store is the
    same SQLite file: the longer lock adds nothing there but time)."""
    seconds = seconds or (30.0 if ctx.kind == "sqlite" else 10.0)
    started = time.monotonic()
    c = client()
    try:
        with workers(ctx.env, ctx.proc, 2) as w:
            wait_children(w, 2)
            ctx.history.submit(c, "mark", keys("l", calls // 2), 0.002)
            locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(ctx.tmp / "ec.db"), str(seconds)],
                                      stdout=subprocess.PIPE, text=True)
            try:
                assert locker.stdout.readline().strip() == "locked"
                ctx.history.submit(c, "mark", keys("m", calls // 2), 0.002)  # waits for the lock
                locker.wait(seconds + 30)
            finally:
                if locker.poll() is None:
                    locker.kill()
            settle(ctx.history, 120)
    finally:
        c.close()
    return check(ctx.history, f"store locked {seconds:.0f}s ({ctx.kind})", started)


def poison(ctx: Ctx, calls: int = 300, limit: int = 3) -> object:
    """Calls that always kill their worker, among normal ones: dead after the delivery
    limit (3 here, so the workers' restart backoff stays short), the rest keep flowing."""
    from ectool.store.models import Call

    started = time.monotonic()
    c = client()
    try:
        bad = c.submit("crash", [(["kill"], {})] * 2, reply=False)
        ctx.history.submit(c, "mark", keys("p", calls), 0.001)
        with workers(dict(ctx.env, EC_DELIVERY_LIMIT=str(limit)), ctx.proc, 2):
            settle(ctx.history, 120)
            wait_for(lambda: Call.select().where(Call.id.in_(bad) & (Call.status == "dead")).count() == 2,
                     timeout=120, what="poison calls dead")
    finally:
        c.close()
    return check(ctx.history, f"poison messages ({ctx.kind})", started)


def self_end(ctx: Ctx, calls: int = 300) -> object:
    """Tasks that end their own process (os._exit, SIGKILL to itself), raise in a thread,
    blow up memory under a limit, or overrun their timeout, among normal calls: each ends
    in its expected state, the workers survive, and the normal calls all finish."""
    from ectool.store.models import Call

    expected = {  # (socket, args) -> (status, error type)
        ("crash", ("exit",)): ("dead", "DeliveryLimit"),
        ("crash", ("kill",)): ("dead", "DeliveryLimit"),
        ("crash", ("thread",)): ("done", None),
        ("hog", (4096,)): ("failed", "MemoryError"),
        ("slow", (30, "late")): ("failed", "TimeoutError"),
    }
    started = time.monotonic()
    c = client()
    try:
        odd = {c.submit(sock, [(list(args), {})], reply=False)[0]: (sock, args) for sock, args in expected}
        ctx.history.submit(c, "mark", keys("e", calls), 0.001)
        with workers(ctx.env, ctx.proc, 2, "--memory-limit", "1024") as w:
            settle(ctx.history, 120)
            wait_for(lambda: Call.select().where(Call.id.in_(list(odd)) & Call.finished.is_null(False)).count()
                     == len(odd), timeout=120, what="every odd call final")
            assert w.poll() is None, "the worker supervisor died"
    finally:
        c.close()
    rows = {r.id: r for r in Call.select().where(Call.id.in_(list(odd)))}
    got = {odd[i]: (r.status, r.error_type) for i, r in rows.items()}
    assert got == expected, got
    assert "uncaught in a thread" in (rows[next(i for i, k in odd.items() if k == ("crash", ("thread",)))].log or "")
    return check(ctx.history, f"tasks ending themselves ({ctx.kind})", started)


def _rabbit_env(**settings: int) -> dict[str, int | None]:
    """Set RabbitMQ application settings at runtime (one rabbitmqctl call, each costs about
    a second); return their previous values (None: unset)."""
    keys = list(settings)
    sets = ", ".join(f"application:set_env(rabbit, {k}, {v})" for k, v in settings.items())
    code = f"Old = [application:get_env(rabbit, K) || K <- [{', '.join(keys)}]], {sets}, Old."
    out = subprocess.run(["rabbitmqctl", "eval", code], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    old = [int(n) if n else None for n in
           [part.split(",")[1].rstrip("}") if part.startswith("{ok,") else "" for part in
            out.strip().strip("[]").replace(" ", "").replace("\n", "").replace("},{", "}|{").split("|")]]
    return dict(zip(keys, old, strict=True))


def consumer_timeout(ctx: Ctx, calls: int = 200) -> object:
    """A call longer than RabbitMQ's consumer_timeout keeps its worker's channel and runs once.

    The broker's timeout is lowered to 2 s (checked every 0.5 s) only while the workers open
    their channels (a channel reads it when it opens), then put back; the workers hand off
    deliveries held over 1 s (EC_ACK_DEADLINE)."""
    from ectool.store.models import Call, Worker

    assert ctx.kind == "amqp"
    started = time.monotonic()
    c = client()
    env = dict(ctx.env, EC_ACK_DEADLINE="1")
    old = _rabbit_env(channel_tick_interval=500, consumer_timeout=2000)
    restored = False
    try:
        with workers(env, ctx.proc, 2) as w:
            try:
                wait_for(lambda: Worker.select().where(Worker.status == "running").count() == 2, timeout=60,
                         what="workers consuming")
            finally:
                _rabbit_env(consumer_timeout=old["consumer_timeout"] or 1800000)
            long = c.submit("mark", [([str(ctx.history.marks), "long", 6.0], {})], reply=False)[0]
            ctx.history.confirmed[long] = "long"
            ctx.history.submit(c, "mark", keys("t", calls), 0.01)
            settle(ctx.history, 120)
            log = w.stderr_log
            log.flush()
            log.seek(0)
            lost = [line for line in log.read().splitlines() if "lost RabbitMQ" in line or "timed out" in line]
        _rabbit_env(channel_tick_interval=old["channel_tick_interval"] or 60000)
        restored = True
    finally:
        if not restored:
            _rabbit_env(consumer_timeout=old["consumer_timeout"] or 1800000,
                        channel_tick_interval=old["channel_tick_interval"] or 60000)
        c.close()
    assert not lost, f"a worker lost its channel: {lost[:3]}"
    assert Call.get_by_id(long).attempts == 1
    return check(ctx.history, "call > consumer_timeout (amqp)", started)


SCENARIOS = {
    "worker_kill9": (worker_kill9, ("sqlite", "amqp")),
    "agent_kill9": (agent_kill9, ("sqlite", "amqp")),
    "supervisor_kill9": (supervisor_kill9, ("sqlite", "amqp")),
    "store_lock": (store_lock, ("sqlite", "amqp")),
    "poison": (poison, ("sqlite", "amqp")),
    "self_end": (self_end, ("sqlite", "amqp")),
    "rabbitmq_restart": (rabbitmq_restart, ("amqp",)),
    "consumer_timeout": (consumer_timeout, ("amqp",)),
    "postgres_restart": (postgres_restart, ("amqp+pg",)),
    "postgres_restart_agent": (postgres_restart_agent, ("sqlite+pg",)),
}
