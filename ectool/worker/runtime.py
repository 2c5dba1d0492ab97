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
import re
import signal
import socket as _socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peewee import DataError, IntegrityError

from .. import events
from ..config import Config
from ..errors import NotFound, UsageError
from ..liveness import WORKER_ALIVE, WORKER_HEARTBEAT
from ..messages import BadMessage, CallMessage, decode, dumps, peek_id
from ..outcome import Outcome
from ..publisher import broker_queue
from ..store import ledger, retrying, transient
from ..store.ledger import record_outcomes
from ..store.models import FINAL_CALL_STATUS, Processor, Worker, db, now
from ..transport import REDELIVERED, Delivery
from . import loader, retry
from .executor import ExecutorDied, make_executor
from .parts import Part, Settlement, calls_in

log = logging.getLogger("ec.worker")
HOST = os.environ.get("EC_NODE") or _socket.gethostname()  # an agent's --node, else the host
HEARTBEAT = WORKER_HEARTBEAT
ALIVE = WORKER_ALIVE  # a worker whose heartbeat is older than this is presumed dead (ectool.liveness)
PARK = 30.0  # seconds before a parked copy of a call running elsewhere is looked at again
SPILL_AFTER = 0.1  # a batch running this long hands the rest of its bundles back (seconds)


@dataclass
class SocketInfo:
    name: str
    task: str
    queue: str
    timeout: float | None
    retries: int
    backoff: float


@dataclass
class Result:
    """What happened when one call ran."""

    msg: CallMessage
    status: str  # done | retrying | failed
    result_json: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    retry_delay: float = 0.0
    ms: float | None = None  # how long the call ran
    log: str | None = None  # what the call printed
    started: dt.datetime | None = None  # when this call (not its batch) started and ended
    finished: dt.datetime | None = None

    def __post_init__(self) -> None:
        # what a task prints or raises is anybody's text: PostgreSQL's text type cannot
        # hold NUL, and neither store takes a lone surrogate (no UTF-8 form); recording
        # either failed every attempt (the worker died, the call ended dead). Both are
        # stored as U+FFFD instead, on every store alike.
        self.error_type, self.error_message, self.traceback, self.log = (
            storable_text(v) for v in (self.error_type, self.error_message, self.traceback, self.log))
        if self.error_type and len(self.error_type) > 255:  # its column is a varchar(255)
            self.error_type = self.error_type[:255]


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str | None) -> str | None:
    """``text`` with NUL and lone surrogates as U+FFFD (the common case costs one scan)."""
    if not text:
        return text
    if "\x00" not in text:
        try:
            text.encode()
            return text
        except UnicodeEncodeError:
            pass
    return _UNSTORABLE.sub("\ufffd", text)


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
                                 heartbeat=now(), commit=commit or proc.commit,
                                 cpu=int(os.environ["EC_CPU"]) if os.environ.get("EC_CPU") else None,
                                 agent=int(os.environ["EC_AGENT_ID"]) if os.environ.get("EC_AGENT_ID") else None)
        self.parent = int(os.environ.get("EC_PARENT_PID") or 0)
        events.configure(config)
        events.emit("worker.online", processor=proc.name, worker=self.row.id, cpu=self.row.cpu)
        self._engine = None
        self.crashes = 0
        self.spilled = False  # the last batch handed bundled calls back: they are slow here
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
    def handle(self, batch: list[Delivery], spread: bool = False) -> None:
        """Run a batch of deliveries; ``spread``: send their bundles out again unrun, one
        call to a message (:meth:`spread_held`)."""
        self.settlement = Settlement(self.consumer)
        parts = self.settlement.split(batch)
        # a bundle that comes back (its worker died, or handed it back) goes out again as
        # single messages: each call then counts its own deliveries, so a broker's delivery
        # limit can only ever dead-letter the call that keeps killing workers, never its
        # bundle with calls that did nothing wrong in it
        again = [p for p in parts if not p.whole and (spread or p.redeliveries > 0)]
        if again:
            for redelivered in (True, False):
                chosen = [p for p in again if (p.redeliveries > 0) is redelivered]
                if chosen:
                    self.resend(chosen, redelivered=redelivered)
            sent = {id(p) for p in again}
            parts = [p for p in parts if id(p) not in sent]
        good: list[tuple[Part, CallMessage]] = []
        seen: dict[str, int] = {}  # call id -> its index in good
        copies: list[Part] = []  # a second copy of a call in this batch (a resent or parked one)
        for d in parts:
            try:
                m = decode(d.body)
            except BadMessage as exc:
                self.bury(d, peek_id(d.body), f"undecodable message: {exc}", "BadMessage")
                continue
            i = seen.get(m.id)
            if i is None:
                seen[m.id] = len(good)
                good.append((d, m))
            elif (m.attempt, d.redeliveries) > (good[i][1].attempt, good[i][0].redeliveries):
                copies.append(good[i][0])  # the newest attempt is the one to handle, and of
                good[i] = (d, m)           # one attempt the redelivered copy (it recovers flows)
            else:
                copies.append(d)
        if good:
            self.run_parts(good)
        # settled once the first copy is: run, recorded, parked, buried or given back, it
        # left a durable outcome or a durable copy behind either way
        self.settlement.settle(copies)

    def run_parts(self, good: list[tuple[Part, CallMessage]]) -> None:
        """Claim, check and run the decoded calls of a batch (one copy of each)."""
        # first deliveries of queued calls: claimed (marked running) in one statement
        fresh = [m.id for d, m in good if d.redeliveries == 0]
        claimed = self.store(lambda _: ledger.claim_calls(fresh, HOST, self.pid), "claiming calls") if fresh else {}
        ids = [m.id for _, m in good if m.id not in claimed]
        rows = self.store(lambda _: ledger.claim_rows(ids), "reading calls") if ids else {}
        marked, runnable, suspects = [], [], []
        for d, m in good:
            if m.id in claimed:
                prior = claimed[m.id] - m.attempt  # attempts that died before this one
                if not self.refused(d, m, prior):
                    (suspects if prior > 0 else marked).append((d, m, CLAIMED))
                continue
            row = rows.get(m.id)
            if row is not None and row.status in FINAL_CALL_STATUS:
                if d.redeliveries > 0:
                    # a worker may have died after recording but before the flow moved on
                    self.store(lambda _, m=m: self.follow_on(m, Outcome.from_row(ledger.get(m.id)), True),
                               "recovering a flow")
                self.settlement.settle([d])  # outcome already recorded: never run twice
                continue
            if row is not None and row.status == "running" and self.running_elsewhere(row):
                self.park(d)
                continue
            prior = (row.attempts - (m.attempt - 1)) if row is not None else 0
            if self.refused(d, m, prior):
                continue
            (suspects if (prior > 0 or d.redeliveries > 0 or row is None) else runnable).append((d, m, row))
        # a redelivered call may be the one that killed the last worker: run it alone, so a
        # crash charges only it
        if marked:
            self.run_batch(marked, marked=True)
        if runnable:
            self.run_batch(runnable)
        for item in suspects:
            if self.stopping:
                if item[2] is CLAIMED:
                    self.unclaim([item[1].id])
                self.give_back([item[0]])
                continue
            self.run_batch([item], marked=item[2] is CLAIMED)

    def refused(self, d: Part, m: CallMessage, prior: int) -> bool:
        """Bury a call whose workers died running it ``prior`` >= delivery_limit times, or
        that names a socket this worker does not serve; True if it was buried."""
        if prior >= self.config.delivery_limit:
            self.bury(d, m.id, f"delivery limit: its worker died {prior} times running it", "DeliveryLimit",
                      reply_to=m.reply_to, msg=m)
            return True
        if m.socket not in self.sockets:
            self.bury(d, m.id, f"socket {m.socket!r} is not served by processor {self.processor.name!r}",
                      "UnknownSocket", reply_to=m.reply_to, msg=m)
            return True
        return False

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

    def park(self, d: Part) -> None:
        """Put a copy of call ``d`` in a delay queue (durably), then settle it. A copy of a
        redelivered call stays one: the worker running it may still die before its flow
        moves on, and then only this copy is left to see to it."""
        headers = {"x-ec-parked": 1} | ({REDELIVERED: 1} if d.redeliveries > 0 else {})
        self.transport.publish(d.queue, [d.body], delay=self.park_after, headers=headers)
        self.settlement.settle([d])

    def follow_on(self, m: CallMessage, out: Outcome, recovering: bool) -> None:
        """Advance the call's workflow (if any) and fire its plugs; safe to repeat."""
        self.follow_on_many([(m, out)], recovering)

    def follow_on_many(self, pairs: list[tuple[CallMessage, Outcome]], recovering: bool) -> None:
        """:meth:`follow_on` for a batch: the workflow members advance together (their joins
        in one transaction per parallel node), then every call's plugs fire."""
        members = [(m, out) for m, out in pairs if m.cont]
        if members:
            self.engine.on_outcomes(members, recovering=recovering)
        for m, out in pairs:
            self.engine.on_plugs(m, out)

    def unclaim(self, ids: list[str]) -> None:
        """Calls marked running that will not run here after all: queued again, uncharged.
        While stopping, best effort (an outage leaves them charged, and running under a pid
        that is about to end); otherwise the outage is waited out, or copies elsewhere would
        find them running here and be parked again and again."""
        def requeue(_: int) -> None:
            ledger.requeue(ids, HOST, self.pid, touch=False)

        if not self.stopping:
            self.store(requeue, "giving calls back")
            return
        try:
            requeue(0)
        except Exception as exc:  # noqa: BLE001 - the attempt stays charged; still give them back
            if not transient(exc):
                raise

    def run_batch(self, items: list[tuple[Part, CallMessage, Any]], marked: bool = False) -> None:
        """Run ``items`` (part, message, row) in order; ``marked``: already claimed."""
        missing = [m for _, m, row in items if row is None]
        ids = [m.id for _, m, _ in items]

        def start(_: int) -> None:
            if missing:
                ledger.insert_missing([{"id": m.id, "socket": m.socket, "root": m.root or m.id, "parent": m.parent,
                                       "flow": m.flow, "status": "queued", "attempts": m.attempt - 1,
                                       "args": dumps({"args": m.args, "kwargs": m.kwargs})} for m in missing])
            ledger.mark_running(ids, HOST, self.pid)

        if not marked:
            self.store(start, "marking calls running")
        results: list[tuple[Part, Result]] = []
        returned: list[Part] = []
        crashed: Part | None = None
        spill_from: int | None = None
        began = time.monotonic()
        for i, (d, m, _) in enumerate(items):
            if self.stopping or crashed is not None:
                returned.append(d)
                continue
            if not d.whole and time.monotonic() - began > SPILL_AFTER:
                spill_from = i  # after what ran is recorded: those outcomes come first
                break
            events.emit("call.started", call=m.id, socket=m.socket, attempt=m.attempt)
            try:
                results.append((d, self.execute(m)))
                self.crashes = 0
            except ExecutorDied as exc:
                log.warning("call %s: %s", m.id, exc)
                crashed = d
        self.record(results)
        if returned:
            back = {id(d) for d in returned}
            self.unclaim([m.id for d, m, _ in items if id(d) in back])
            self.give_back(returned)
        if crashed is not None:
            # the call stays charged with the attempt that killed its executor: after
            # delivery_limit of those it is dead-lettered (see handle); it is queued again,
            # not running here any more
            cid = next(m.id for d, m, _ in items if d is crashed)
            self.store(lambda _: ledger.requeue([cid], HOST, self.pid, uncharge=False), "requeueing a crashed call")
            self.give_back([crashed], redelivered=True)
            self.crashes += 1
            time.sleep(min(10.0, 0.25 * 2 ** self.crashes))
        if spill_from is not None:
            later = self.spill(items[spill_from:])
            if later:
                self.run_batch(later, marked=True)

    def spill(self, items: list[tuple[Part, CallMessage, Any]]) -> list[tuple[Part, CallMessage, Any]]:
        """Hand the bundled calls among ``items`` (claimed here, not started) back to their
        queues, each a message of its own (durably, before its part is settled), so idle
        workers take them: what a batch holds of bundles whose calls turned out slow.
        Returns the others (whole deliveries: the broker spread those already), to run here."""
        rest = [d for d, _, _ in items if not d.whole]
        ids = [m.id for d, m, _ in items if not d.whole]
        # queued again before they go out: a copy another worker takes must not look like
        # a call still running here (it would be parked, again and again)
        self.store(lambda _: ledger.requeue(ids, HOST, self.pid), "handing calls back")
        self.resend(rest)
        self.spilled = True
        log.debug("handed %d call(s) of bundles back", len(rest))
        return [item for item in items if item[0].whole]

    def give_back(self, parts: list[Part], redelivered: bool = False) -> None:
        """Return ``parts`` unrun: a whole delivery to its queue (nacked); a part of a bundle
        as a message of its own (see :mod:`ectool.worker.parts`: a bundle never goes back whole).
        ``redelivered``: the part's attempt was charged (its executor died running it)."""
        bundled = [d for d in parts if not d.whole]
        if bundled:
            self.resend(bundled, redelivered=redelivered)
        self.settlement.settle([d for d in parts if d.whole], give_back=True)

    def resend(self, parts: list[Part], redelivered: bool = False) -> None:
        """Publish each of ``parts`` as a message of its own (durably), then settle them.
        ``redelivered``: the copies are handled as redeliveries (:data:`REDELIVERED`)."""
        by_queue: dict[str, list[bytes]] = {}
        for d in parts:
            by_queue.setdefault(d.queue, []).append(d.body)
        for queue, bodies in by_queue.items():
            self.transport.publish(queue, bodies, headers={REDELIVERED: 1} if redelivered else None)
        self.settlement.settle(parts)

    def execute(self, m: CallMessage) -> Result:
        info = self.sockets[m.socket]
        stamp, started = now(), time.monotonic()
        out = self.executor.run(info.task, m.args, m.kwargs, info.timeout)
        ms = round((time.monotonic() - started) * 1000, 3)
        # each call's own times, not its batch's (ec stats reads finished - started)
        times = {"started": stamp, "finished": stamp + dt.timedelta(milliseconds=ms)}
        if out["status"] == "done":
            return Result(m, "done", result_json=out["result"], ms=ms, log=out.get("log"), **times)
        res = Result(m, "failed", error_type=out.get("error_type"), error_message=out.get("error_message"),
                     traceback=out.get("traceback"), ms=ms, log=out.get("log"), **times)
        if not out.get("final") and retry.should_retry(m.attempt, info.retries):
            res.status = "retrying"
            res.retry_delay = retry.backoff_delay(m.attempt, info.backoff)
        return res

    def record(self, results: list[tuple[Part, Result]]) -> None:
        for d, r in results:
            if r.status == "retrying":
                self.transport.publish(d.queue, [r.msg.next_attempt().encode()], delay=r.retry_delay)
        self.store(lambda _: record_or_refuse([r for _, r in results]), "recording outcomes")
        for _, r in results:
            events.emit(f"call.{r.status}", call=r.msg.id, socket=r.msg.socket, attempt=r.msg.attempt, ms=r.ms,
                        error_type=r.error_type,
                        result_json=r.result_json if r.result_json is None or len(r.result_json) <= 4096 else None,
                        retry_in=r.retry_delay if r.status == "retrying" else None)
        # one outcome per final call, for its workflow, its plugs and its reply (the result
        # is decoded only if a workflow or a plug needs the value)
        final = [(r.msg, Outcome(r.msg.id, r.status, error_type=r.error_type, error_message=r.error_message,
                                 traceback=r.traceback, attempts=r.msg.attempt, result_json=r.result_json))
                 for _, r in results if r.status != "retrying"]
        if final:
            self.store(lambda attempt: self.follow_on_many(final, attempt > 0), "advancing flows")
        self.transport.replies([(m.reply_to, self.reply_body(out)) for m, out in final if m.reply_to])
        self.settlement.settle([d for d, _ in results])

    @property
    def engine(self):
        if self._engine is None:
            from ..engine import Engine

            self._engine = Engine(self.transport, self.config.max_message_bytes, self.config.namespace)
        return self._engine

    def reply_body(self, out: Outcome) -> bytes:
        """A reply, without result and traceback if it would be too big (read from the store)."""
        body = out.encode()
        limit = getattr(self.transport, "max_reply_bytes", None)
        return out.encode(payload=False) if limit and len(body) > limit else body

    def reply(self, address: str, out: Outcome) -> None:
        try:
            self.transport.reply(address, self.reply_body(out))
        except Exception:  # noqa: BLE001 - replies are best-effort; the store has the outcome
            log.debug("reply to %s failed", address, exc_info=True)

    def bury(self, d: Part, call_id: str | None, reason: str, error_type: str,
             reply_to: str | None = None, msg: CallMessage | None = None) -> None:
        """Dead-letter a call and mark it ``dead`` with the reason (a whole delivery is moved
        by the consumer; a part of a bundle is copied there on its own, then settled)."""
        if call_id:
            self.store(lambda _: ledger.bury(call_id, reason, error_type), "burying a call")
        events.emit("call.dead", call=call_id, socket=msg.socket if msg else None, error_type=error_type,
                    reason=reason)
        if msg is not None:
            dead = Outcome(msg.id, "dead", error_type=error_type, error_message=reason)
            self.store(lambda attempt: self.follow_on(msg, dead, attempt > 0), "advancing a flow")
        if d.whole:
            self.consumer.dead_letter(d.delivery, reason)
            self.settlement.forget(d)
        else:
            self.transport.bury(d.queue, d.body, reason)
            self.settlement.settle([d])
        if reply_to and call_id:
            self.reply(reply_to, Outcome(call_id, "dead", error_type=error_type, error_message=reason))


CLAIMED = object()  # the row of a call this worker marked running with claim_calls
def _pid_alive(pid: int | None) -> bool:
    """Is process ``pid`` (on this host) alive? A zombie (killed, not yet reaped) is not."""
    import psutil

    try:
        return bool(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


#: what a store raises for content it will not hold (a bad value, not an outage)
REFUSED = (DataError, IntegrityError, ValueError)


def record_or_refuse(results: list[Result]) -> None:
    """:func:`record_outcomes`, and if the store refuses the batch's content, each outcome
    on its own; one it still refuses is recorded as ``failed`` (``RecordFailed``, with the
    store's reason, without result or log) in its place. Otherwise the worker would die
    on it, the call run again, and again, until it ended dead for the wrong reason."""
    try:
        record_outcomes(results)
    except REFUSED as exc:
        if len(results) > 1:
            for r in results:
                record_or_refuse([r])
        else:
            _refused(results[0], exc)
            record_outcomes(results)


def _refused(r: Result, exc: BaseException) -> None:
    log.warning("the store refused the outcome of call %s: %s", r.msg.id, exc)
    r.status, r.result_json, r.traceback, r.log, r.retry_delay = "failed", None, None, None, 0.0
    r.error_type = "RecordFailed"
    r.error_message = storable_text(f"the store refused this call's outcome: {type(exc).__name__}: {exc}"[:1000])
