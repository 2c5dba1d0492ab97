"""The worker runtime: consume a processor's socket queues, run calls, record outcomes.

One worker process runs one call at a time (one per core; the agent or ``ec worker -c N``
starts several). Deliveries are handled in small batches so store writes and acks are
group-committed, but an ack never precedes the durable outcome. A delivery may carry a
bundle of calls (:mod:`ectool.worker.parts`): each call is a part, and the delivery is settled
once all its parts are; the rest of a bundle whose calls turn out slow is handed back as
single messages, so other workers can take them.

1. decode (bad messages are dead-lettered with the reason, the call marked ``dead``);
2. read the calls' rows: a call already final is acked without running (idempotence); a
   call that has started this attempt ``delivery_limit`` times already (its workers
   died) is marked ``dead`` and dead-lettered;
3. mark the calls ``running`` (attempts + 1), run each under the socket's timeout;
4. publish retries (delayed) for failures with retries left, commit every outcome in one
   transaction, send replies, then ack.

A call still running on another live worker (its delivery handed off because it ran past
the ack deadline, or redelivered after that worker lost its broker connection) is not run
twice: its copy is parked in a delay queue and looked at again later. A worker's liveness
is its heartbeat (a thread, so it beats during long calls) and, on this host, its pid.

A store outage (PostgreSQL restarting, the SQLite file locked past its busy timeout)
pauses the worker: each store step is retried with backoff while the deliveries stay
unacked, then the batch carries on (see :func:`ectool.store.retrying`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket as _socket
import threading
import time
from pathlib import Path
from typing import Any

from .. import events
from ..config import Config
from ..errors import NotFound, UsageError
from ..liveness import WORKER_ALIVE, WORKER_HEARTBEAT
from ..messages import CallMessage
from ..outbox import Outbox
from ..outcome import Outcome
from ..publisher import broker_queue
from ..store import retrying, transient
from ..store.models import Processor, Worker, db, now
from ..transport import Delivery
from . import loader, retry
from .batch import Batch, Crashes, Deps, SocketInfo
from .executor import make_executor
from .parts import calls_in
from .pinned import PinError, Pinned, same_commit
from .result import Result

log = logging.getLogger("ec.worker")
HOST = os.environ.get("EC_NODE") or _socket.gethostname()  # an agent's --node, else the host
HEARTBEAT = WORKER_HEARTBEAT
ALIVE = WORKER_ALIVE  # a worker whose heartbeat is older than this is presumed dead (ectool.liveness)
PARK = 30.0  # seconds before a parked copy of a call running elsewhere is looked at again


class WorkerRuntime:
    """One worker process serving some sockets of one processor."""

    def __init__(self, config: Config, processor: str, sockets: list[str] | None = None,
                 path: str | None = None, prefetch: int | None = None, python: str | None = None,
                 commit: str | None = None, memory_limit: int | None = None) -> None:
        from ..store import open_store
        from ..transport import open_transport

        self.config = config
        open_store(config.db)
        proc = Processor.get_or_none(Processor.name == processor)
        if proc is None:
            raise NotFound(f"no processor named {processor!r}")
        self.processor = proc
        rows = list(proc.sockets)
        if sockets:
            unknown = set(sockets) - {s.name for s in rows}
            if unknown:
                raise NotFound(f"processor {processor!r} has no socket(s) {', '.join(sorted(unknown))}")
            rows = [s for s in rows if s.name in sockets]
        if not rows:
            raise UsageError(f"processor {processor!r} has no sockets to serve")
        where = Path(path) if path else loader.local_path(proc.gitrepo)
        self.executor = make_executor(proc.module, where, python, proc.runtime, memory_limit)
        # provenance: the agent's deployment names its commit; a worker on a directory asks git
        self.commit = commit or loader.git_commit(where) or proc.commit
        self.pinned = Pinned(proc.gitrepo, proc.module, proc.runtime or "python", memory_limit,
                             {self.commit or "", proc.deployed_commit or ""})
        self.sockets: dict[str, SocketInfo] = {}
        for s in rows:
            self.sockets[s.name] = SocketInfo(s.name, s.task, broker_queue(s.name, config.namespace),
                                              s.timeout, s.retries, s.backoff)
        self.transport = open_transport(config)
        for s in rows:
            self.transport.declare(broker_queue(s.name, config.namespace), kind=s.queue.queue_type,
                                   max_length=s.queue.max_length)
        # one delivery at a time by default (it may be a bundle of calls): a socket's
        # concurrency is how many worker processes run its calls, not how many calls one
        # worker holds, or slow calls would queue behind each other while workers idle
        self.prefetch = prefetch or 1
        self.consumer = self.transport.consumer([i.queue for i in self.sockets.values()], self.prefetch,
                                                hand_off_after=config.ack_deadline)
        self.park_after = min(PARK, float(config.ack_deadline))
        self.stopping = False
        self.pid = os.getpid()
        self.row = Worker.create(processor=proc, host=HOST, pid=self.pid, status="running",
                                 heartbeat=now(), commit=self.commit,
                                 cpu=int(os.environ["EC_CPU"]) if os.environ.get("EC_CPU") else None,
                                 agent=int(os.environ["EC_AGENT_ID"]) if os.environ.get("EC_AGENT_ID") else None)
        self.parent = int(os.environ.get("EC_PARENT_PID") or 0)
        events.configure(config)
        events.emit("worker.online", processor=proc.name, worker=self.row.id, cpu=self.row.cpu)
        self._engine = None
        self.spilled = False  # the last batch handed bundled calls back: they are slow here
        self.deps = Deps(self.consumer, self.transport, self.sockets, self.execute, self.follow_on_many,
                         pid=self.pid, host=HOST, processor=proc.name,
                         ran_at=(proc.name, self.commit, proc.runtime or "python"), delivery_limit=config.delivery_limit,
                         park_after=self.park_after, store=self.store, stopping=lambda: self.stopping,
                         running_elsewhere=self.running_elsewhere, crashes=Crashes())
        self.beating = threading.Event()
        self.beat = threading.Thread(target=self._beat, name="ec-heartbeat", daemon=True)
        self.beat.start()

    # -- lifecycle -----------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def store(self, fn, what: str):
        """Run store step ``fn(attempt)``, waiting out an outage (until asked to stop)."""
        return retrying(fn, what=what, stop=lambda: self.stopping)

    def _beat(self) -> None:
        """Heartbeat thread: the Worker row and an event every HEARTBEAT seconds, even while
        a long call runs (other workers judge this worker alive by it)."""
        try:
            while not self.beating.wait(HEARTBEAT):
                self.mark("heartbeat")
                events.heartbeat(processor=self.processor.name, worker=self.row.id)
        finally:
            db.close()

    def mark(self, what: str, **fields: Any) -> None:
        """Best-effort update of this worker's own row (skipped while the store is down)."""
        try:
            Worker.update(heartbeat=now(), **fields).where(Worker.id == self.row.id).execute()
        except Exception as exc:  # noqa: BLE001 - status only; the next beat retries
            if not transient(exc):
                raise
            log.debug("%s skipped: store unavailable", what)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; in-flight calls finish, unstarted ones go back."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        try:
            while not self.stopping:
                first = self.consumer.get(timeout=1.0)
                if first is not None:
                    batch, calls = [first], calls_in(first)
                    while calls < self.prefetch:
                        more = self.consumer.get(timeout=0)
                        if more is None:
                            break
                        batch.append(more)
                        calls += calls_in(more)
                    try:
                        self.handle(batch)
                        if self.spilled:
                            self.spread_held()
                    except Exception as exc:
                        if not (self.stopping and transient(exc)):
                            raise
                        log.warning("stopping during a store outage: unfinished deliveries go back")
                if self.parent and os.getppid() != self.parent:
                    log.warning("parent %s is gone; stopping", self.parent)
                    self.stopping = True
        finally:
            self.beating.set()
            self.consumer.close()
            self.executor.close()
            self.pinned.close()
            self.mark("offline", status="stopped")
            events.emit("worker.offline", processor=self.processor.name, worker=self.row.id)
            events.bus().flush(1.0)
            self.transport.close()

    def spread_held(self) -> None:
        """After a batch whose bundled calls were slow enough to hand back: the bundles
        still held in the consumer's buffer go out again one call to a message too, for idle
        workers, rather than wait here (past the ack deadline, at worst) for calls like them."""
        self.spilled = False
        held = []
        while (more := self.consumer.get(timeout=0)) is not None:
            held.append(more)
        if held:
            self.handle(held, spread=True)

    # -- one batch -----------------------------------------------------------------
    def handle(self, deliveries: list[Delivery], spread: bool = False) -> None:
        """Run a batch of deliveries (:class:`~ectool.worker.batch.Batch`); ``spread``:
        send their bundles out again unrun, one call to a message (:meth:`spread_held`)."""
        batch = Batch(self.deps, spread)
        batch.handle(deliveries)
        self.spilled = self.spilled or batch.spilled

    def running_elsewhere(self, row: Any) -> bool:
        """Is ``row`` (a running call) being run right now by another live worker?"""
        if row.host == HOST and row.worker_pid == self.pid:
            return False  # not by us: we run one call at a time, and it is not this one
        if row.host == HOST and not _pid_alive(row.worker_pid):
            return False
        fresh = now() - dt.timedelta(seconds=ALIVE)
        return self.store(lambda _: Worker.select().where(
            (Worker.host == row.host) & (Worker.pid == row.worker_pid) & (Worker.status == "running")
            & (Worker.heartbeat >= fresh)).exists(), "checking a worker")

    def follow_on_many(self, pairs: list[tuple[CallMessage, Outcome]], recovering: bool,
                       outbox: Outbox | None = None) -> None:
        """Advance the workflows of final calls and fire their plugs (safe to repeat), in
        the caller's transaction: the workflow members advance together (their joins in
        one transaction per parallel node), then every call's plugs fire. What follows
        goes in ``outbox``, to send after the commit, with the steps kept here."""
        engine = self.engine
        engine.outbox = outbox
        try:
            members = [(m, out) for m, out in pairs if m.cont]
            if members:
                engine.on_outcomes(members, recovering=recovering)
            for m, out in pairs:
                engine.on_plugs(m, out)
        finally:
            engine.outbox = None

    def executor_for(self, m: CallMessage) -> tuple[Any, tuple[str, str | None, str] | None]:
        """(the executor to run ``m`` with, its provenance when not this worker's own): a
        call pinned to another commit runs in a deployment of that commit
        (:mod:`ectool.worker.pinned`; :class:`PinError` when there can be none)."""
        if not m.pin or same_commit(m.pin, self.commit):
            return self.executor, None
        full, ex = self.pinned.executor(m.pin)
        return ex, (self.processor.name, full, self.processor.runtime or "python")

    def execute(self, m: CallMessage) -> Result:
        info = self.sockets[m.socket]
        stamp, started = now(), time.monotonic()
        try:
            executor, ran_at = self.executor_for(m)
        except PinError as exc:  # final: another attempt would find the same repository
            return Result(m, "failed", error_type="PinError", error_message=str(exc), started=stamp, finished=stamp,
                          ran_at=(self.processor.name, m.pin, self.processor.runtime or "python"))
        out = executor.run(info.task, m.args, m.kwargs, info.timeout)
        ms = round((time.monotonic() - started) * 1000, 3)
        # each call's own times, not its batch's (ec stats reads finished - started)
        finished = stamp + dt.timedelta(milliseconds=ms)
        if out["status"] == "done":
            return Result(m, "done", result_json=out["result"], ms=ms, log=out.get("log"),
                          started=stamp, finished=finished, ran_at=ran_at)
        res = Result(m, "failed", error_type=out.get("error_type"), error_message=out.get("error_message"),
                     traceback=out.get("traceback"), ms=ms, log=out.get("log"), started=stamp, finished=finished,
                     ran_at=ran_at)
        if not out.get("final") and retry.should_retry(m.attempt, info.retries):
            res.status = "retrying"
            res.retry_delay = retry.backoff_delay(m.attempt, info.backoff)
        return res

    @property
    def engine(self):
        if self._engine is None:
            from ..engine import Engine

            self._engine = Engine(self.transport, self.config.max_message_bytes, self.config.namespace)
        return self._engine


def _pid_alive(pid: int | None) -> bool:
    """Is process ``pid`` (on this host) alive? A zombie (killed, not yet reaped) is not."""
    import psutil

    try:
        return bool(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
