"""One consumer batch and its settlement: split, dedupe, run, record, reply, spill.

A :class:`Batch` lives as long as the deliveries the worker took together. It splits them
into parts (a bundle is one part per call, :mod:`ectool.worker.parts`), sends back out what
must go out alone, keeps one copy of each call, asks :mod:`ectool.worker.triage` what to do
with each, runs what is to run (the executor and the store behind :class:`Deps`), records
the outcomes and advances their flows in one transaction, replies, and settles every
delivery only once all its parts left a durable outcome or a durable copy behind. What it
needs of the worker is in :class:`Deps`, so a test builds it from fakes.

The hand-off: when an outcome starts the next step of a pipeline, a single call of a
socket this worker serves, the step's row is written running here in the same commit
(:func:`ectool.worker.triage.keep`) and the worker runs it next, as a *kept* part (a part
with no delivery of its own, sent out as a message of its own whenever it is given back).
The deliveries that led to a kept step are settled only when the chain of kept steps ends,
so a crash anywhere in it redelivers the first and recovery finishes the chain.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import events
from ..messages import BadMessage, CallMessage, decode, dumps, peek_id
from ..outbox import Outbox
from ..outcome import Outcome
from ..store import ledger, transient
from ..store.models import db
from ..transport import REDELIVERED, Delivery
from . import triage
from .executor import ExecutorDied
from .parts import Part, Settlement
from .result import REFUSED, Result, record_or_refuse

log = logging.getLogger("ec.worker")
SPILL_AFTER = 0.1  # a batch running this long hands the rest of its bundles back (seconds)

Item = tuple[Part, CallMessage, Any]  # a part, its message, its call's row (None: not in the store)


@dataclass
class SocketInfo:
    name: str
    task: str
    queue: str
    timeout: float | None
    retries: int
    backoff: float


@dataclass
class Crashes:
    """Executor deaths in a row: each pauses the worker longer (at most 10 s)."""

    count: int = 0
    sleep: Callable[[float], None] = time.sleep

    def ok(self) -> None:
        self.count = 0

    def died(self) -> None:
        self.count += 1
        self.sleep(min(10.0, 0.25 * 2 ** self.count))


@dataclass
class Deps:
    """What a batch uses of its worker (the runtime builds one; tests use fakes)."""

    consumer: Any  # ack, nack, dead_letter (ectool.transport)
    transport: Any  # publish, replies, reply, bury
    sockets: dict[str, SocketInfo]
    execute: Callable[[CallMessage], Result]  # run one call (raises ExecutorDied)
    # flows and plugs: (outcomes, recovering, the outbox: what to send after the commit, kept steps)
    follow_on: Callable[[list[tuple[CallMessage, Outcome]], bool, Outbox | None], None]
    pid: int
    host: str
    processor: str = ""
    ran_at: ledger.Provenance | None = None  # (processor, commit, runtime) recorded on each call claimed
    delivery_limit: int = 5
    park_after: float = 30.0
    store: Callable[[Callable[[int], Any], str], Any] = lambda fn, what: fn(0)  # noqa: E731 - wait out outages
    stopping: Callable[[], bool] = lambda: False  # noqa: E731
    running_elsewhere: Callable[[Any], bool] = lambda row: False  # noqa: E731
    crashes: Crashes = field(default_factory=Crashes)


class Batch:
    """The deliveries a worker took together, until each is settled."""

    def __init__(self, deps: Deps, spread: bool = False) -> None:
        self.deps = deps
        self.spread = spread  # send bundles out again unrun, one call to a message
        self.settlement = Settlement(deps.consumer)
        self.spilled = False  # bundled calls were handed back: they are slow here

    def handle(self, deliveries: list[Delivery]) -> None:
        """Run the batch; every delivery is settled when this returns."""
        parts = self.settlement.split(deliveries)
        redelivered, fresh, parts = triage.resent(parts, self.spread)
        if redelivered:
            self.resend(redelivered, redelivered=True)
        if fresh:
            self.resend(fresh)
        decoded = []
        for d in parts:
            try:
                decoded.append((d, decode(d.body)))
            except BadMessage as exc:
                self.bury(d, peek_id(d.body), f"undecodable message: {exc}", "BadMessage")
        good, copies = triage.dedupe(decoded)
        if good:
            self.run_parts(good)
        # settled once the first copy is: run, recorded, parked, buried or given back, it
        # left a durable outcome or a durable copy behind either way
        self.settlement.settle(copies)

    def run_parts(self, good: list[tuple[Part, CallMessage]]) -> None:
        """Claim, triage and run the decoded calls of a batch (one copy of each)."""
        deps = self.deps
        # first deliveries of queued calls: claimed (marked running) in one statement
        fresh = [m.id for d, m in good if d.redeliveries == 0]
        claimed = deps.store(lambda _: ledger.claim_calls(fresh, deps.host, deps.pid, deps.ran_at), "claiming calls") \
            if fresh else {}
        ids = [m.id for _, m in good if m.id not in claimed]
        rows = deps.store(lambda _: ledger.claim_rows(ids), "reading calls") if ids else {}
        marked: list[Item] = []
        runnable: list[Item] = []
        alone: list[tuple[Item, bool]] = []
        for d, m in good:
            row = rows.get(m.id)
            verdict = triage.decide(self.seen(d, m, claimed.get(m.id), row), deps.delivery_limit)
            item = (d, m, row)
            if verdict.action == triage.RUN:
                (marked if verdict.claimed else runnable).append(item)
            elif verdict.action == triage.ALONE:
                alone.append((item, verdict.claimed))
            else:
                self.dispose(verdict, d, m)
        if marked:
            self.run_batch(marked, marked=True)
        if runnable:
            self.run_batch(runnable)
        # a redelivered call may be the one that killed the last worker: run it alone, so a
        # crash charges only it
        for item, was_claimed in alone:
            if deps.stopping():
                if was_claimed:
                    self.unclaim([item[1].id])
                self.give_back([item[0]])
                continue
            self.run_batch([item], marked=was_claimed)

    def seen(self, d: Part, m: CallMessage, claimed: int | None, row: Any) -> triage.Seen:
        """What triage needs to know of one part (asking whether a running call's worker is
        alive only for a running call)."""
        status = row.status if row is not None else None
        elsewhere = status == "running" and claimed is None and self.deps.running_elsewhere(row)
        return triage.Seen(m.attempt, d.redeliveries, m.socket in self.deps.sockets, claimed, status,
                           row.attempts if row is not None else 0, elsewhere)

    def dispose(self, verdict: triage.Verdict, d: Part, m: CallMessage) -> None:
        """A part that does not run: settle, recover, park or bury it."""
        if verdict.action == triage.RECOVER:
            # a worker may have died after recording but before the flow moved on
            self.follow(lambda _: [(m, Outcome.from_row(ledger.get(m.id)))], True, "recovering a flow")
            self.settlement.settle([d])
        elif verdict.action == triage.SETTLE:
            self.settlement.settle([d])  # outcome already recorded: never run twice
        elif verdict.action == triage.PARK:
            self.park(d)
        elif verdict.action == triage.LIMIT:
            self.bury(d, m.id, f"delivery limit: its worker died {verdict.prior} times running it",
                      "DeliveryLimit", reply_to=m.reply_to, msg=m)
        else:
            self.bury(d, m.id, f"socket {m.socket!r} is not served by processor {self.deps.processor!r}",
                      "UnknownSocket", reply_to=m.reply_to, msg=m)

    def park(self, d: Part) -> None:
        """Put a copy of call ``d`` in a delay queue (durably), then settle it. A copy of a
        redelivered call stays one: the worker running it may still die before its flow
        moves on, and then only this copy is left to see to it."""
        headers = {"x-ec-parked": 1} | ({REDELIVERED: 1} if d.redeliveries > 0 else {})
        self.deps.transport.publish(d.queue, [d.body], delay=self.deps.park_after, headers=headers)
        self.settlement.settle([d])

    def unclaim(self, ids: list[str]) -> None:
        """Calls marked running that will not run here after all: queued again, uncharged.
        While stopping, best effort (an outage leaves them charged, and running under a pid
        that is about to end); otherwise the outage is waited out, or copies elsewhere would
        find them running here and be parked again and again."""
        def requeue(_: int) -> None:
            ledger.requeue(ids, self.deps.host, self.deps.pid, touch=False)

        if not self.deps.stopping():
            self.deps.store(requeue, "giving calls back")
            return
        try:
            requeue(0)
        except Exception as exc:  # noqa: BLE001 - the attempt stays charged; still give them back
            if not transient(exc):
                raise

    # -- running ---------------------------------------------------------------------
    def run_batch(self, items: list[Item], marked: bool = False) -> None:
        """Run ``items`` in order, then the steps they hand off to this worker, and so on;
        ``marked``: already claimed. The parts that ran are settled at the end, once every
        kept step has a durable outcome or a durable message of its own."""
        ran: list[Part] = []
        began = time.monotonic()
        while items:
            if not marked:
                self.deps.store(functools.partial(self._start, items), "marking calls running")
            results, returned, crashed, spill_from = self.run_each(items)
            kept = self.record(results, began)
            ran += [d for d, _ in results]
            if returned:
                back = {id(d) for d in returned}
                self.unclaim([m.id for d, m, _ in items if id(d) in back])
                self.give_back(returned)
            if crashed is not None:
                self.requeue_crashed(crashed, items)
            later = self.spill(items[spill_from:]) if spill_from is not None else []
            items, marked = later + kept, True
        self.settlement.settle(ran)

    def _start(self, items: list[Item], _attempt: int) -> None:
        self.start(items)

    def start(self, items: list[Item]) -> None:
        """Mark ``items`` running here (inserting the rows of calls not in the store yet)."""
        missing = [m for _, m, row in items if row is None]
        if missing:
            ledger.insert_missing([{"id": m.id, "socket": m.socket, "root": m.root or m.id, "parent": m.parent,
                                    "flow": m.flow, "status": "queued", "attempts": m.attempt - 1,
                                    "args": dumps({"args": m.args, "kwargs": m.kwargs})} for m in missing])
        ledger.mark_running([m.id for _, m, _ in items], self.deps.host, self.deps.pid, self.deps.ran_at)

    def run_each(self, items: list[Item]) -> tuple[list[tuple[Part, Result]], list[Part], Part | None, int | None]:
        """Run ``items`` one after another: (results, parts returned unrun because the
        worker is stopping or an executor died, the part whose executor died, the index
        from which bundled calls are handed back because this batch ran too long)."""
        results: list[tuple[Part, Result]] = []
        returned: list[Part] = []
        crashed: Part | None = None
        began = time.monotonic()
        for i, (d, m, _) in enumerate(items):
            if self.deps.stopping() or crashed is not None:
                returned.append(d)
                continue
            if not d.whole and time.monotonic() - began > SPILL_AFTER:
                return results, returned, crashed, i  # after what ran is recorded: those outcomes come first
            events.emit("call.started", call=m.id, socket=m.socket, attempt=m.attempt)
            try:
                results.append((d, self.deps.execute(m)))
                self.deps.crashes.ok()
            except ExecutorDied as exc:
                log.warning("call %s: %s", m.id, exc)
                crashed = d
        return results, returned, crashed, None

    def requeue_crashed(self, crashed: Part, items: list[Item]) -> None:
        """The call stays charged with the attempt that killed its executor: after
        delivery_limit of those it is dead-lettered (see triage); it is queued again, not
        running here any more. The worker then pauses (:class:`Crashes`)."""
        cid = next(m.id for d, m, _ in items if d is crashed)
        self.deps.store(lambda _: ledger.requeue([cid], self.deps.host, self.deps.pid, uncharge=False),
                        "requeueing a crashed call")
        self.give_back([crashed], redelivered=True)
        self.deps.crashes.died()

    def spill(self, items: list[Item]) -> list[Item]:
        """Hand the bundled calls among ``items`` (claimed here, not started) back to their
        queues, each a message of its own (durably, before its part is settled), so idle
        workers take them: what a batch holds of bundles whose calls turned out slow.
        Returns the others (whole deliveries: the broker spread those already), to run here."""
        rest = [d for d, _, _ in items if not d.whole]
        ids = [m.id for d, m, _ in items if not d.whole]
        # queued again before they go out: a copy another worker takes must not look like
        # a call still running here (it would be parked, again and again)
        self.deps.store(lambda _: ledger.requeue(ids, self.deps.host, self.deps.pid), "handing calls back")
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
            self.deps.transport.publish(queue, bodies, headers={REDELIVERED: 1} if redelivered else None)
        self.settlement.settle(parts)

    # -- outcomes --------------------------------------------------------------------
    def record(self, results: list[tuple[Part, Result]], began: float) -> list[Item]:
        """Publish retries; commit every outcome and advance flows (one transaction); send
        what follows, reply. Returns the steps kept to run here (the caller settles)."""
        deps = self.deps
        for d, r in results:
            if r.status == "retrying":
                deps.transport.publish(d.queue, [r.msg.next_attempt().encode()], delay=r.retry_delay)
        rs = [r for _, r in results]

        def keep(socket: str, calls: int) -> bool:
            # a short ack deadline (park_after follows it) shortens the chain's hold too
            return triage.keep(triage.Next(socket in deps.sockets, calls, False, deps.stopping(),
                                           time.monotonic() - began), min(triage.KEEP_FOR, deps.park_after / 2))

        # a workflow member's outcome and what follows it are one commit (its workflow's
        # root read with it); calls outside workflows keep the one autocommitted statement
        # (their plugs fire after it)
        roots = list({r.msg.cont["wf"] for r in rs if r.msg.cont and r.status != "retrying"})
        outbox = Outbox(host=deps.host, pid=deps.pid, ran_at=deps.ran_at)

        def commit(attempt: int) -> None:
            outbox.reset()
            outbox.keep = keep if attempt == 0 else None  # a retried step may have committed
            if roots:
                try:
                    with ledger.recording(rs, roots) as outbox.roots:
                        self.advance(rs, attempt > 0, outbox)
                        return
                except REFUSED:
                    outbox.reset()  # rolled back: each outcome on its own (what the store refuses, as failed)
            record_or_refuse(rs)
            with db.atomic() if roots else contextlib.nullcontext():
                self.advance(rs, attempt > 0, outbox)

        if rs:
            deps.store(commit, "recording outcomes")
        outbox.flush()
        for _, r in results:
            events.emit(f"call.{r.status}", call=r.msg.id, socket=r.msg.socket, attempt=r.msg.attempt, ms=r.ms,
                        error_type=r.error_type,
                        result_json=r.result_json if r.result_json is None or len(r.result_json) <= 4096 else None,
                        retry_in=r.retry_delay if r.status == "retrying" else None)
        final = [(r.msg, outcome_of(r)) for r in rs if r.status != "retrying"]
        deps.transport.replies([(m.reply_to, self.reply_body(out)) for m, out in final if m.reply_to])
        return [(Part(Delivery(b"", t.queue, None, 0, {}), m.encode(), whole=False), m, None) for t, m in outbox.kept]

    def advance(self, results: list[Result], recovering: bool, outbox: Outbox) -> None:
        """Advance the flows and fire the plugs of the final ``results`` (in the caller's
        transaction); ``outbox`` collects what to send after the commit and what was kept."""
        final = [(r.msg, outcome_of(r)) for r in results if r.status != "retrying"]
        if recovering:
            outbox.keep = None
        if final:
            self.deps.follow_on(final, recovering, outbox)

    def follow(self, pairs: Callable[[int], list[tuple[CallMessage, Outcome]]], recovering: bool, what: str) -> None:
        """Advance flows outside :meth:`record` (nothing kept), then send what follows."""
        outbox = Outbox()

        def step(attempt: int) -> None:
            outbox.reset()
            with db.atomic():
                self.deps.follow_on(pairs(attempt), recovering or attempt > 0, outbox)

        self.deps.store(step, what)
        outbox.flush()

    def reply_body(self, out: Outcome) -> bytes:
        """A reply, without result and traceback if it would be too big (read from the store)."""
        body = out.encode()
        limit = self.deps.transport.max_reply_bytes  # Transport.max_reply_bytes: None means no limit
        return out.encode(payload=False) if limit and len(body) > limit else body

    def reply(self, address: str, out: Outcome) -> None:
        try:
            self.deps.transport.reply(address, self.reply_body(out))
        except Exception:  # noqa: BLE001 - replies are best-effort; the store has the outcome
            log.debug("reply to %s failed", address, exc_info=True)

    def bury(self, d: Part, call_id: str | None, reason: str, error_type: str,
             reply_to: str | None = None, msg: CallMessage | None = None) -> None:
        """Dead-letter a call and mark it ``dead`` with the reason (a whole delivery is moved
        by the consumer; a part of a bundle is copied there on its own, then settled)."""
        deps = self.deps
        if call_id:
            deps.store(lambda _: ledger.bury(call_id, reason, error_type), "burying a call")
        events.emit("call.dead", call=call_id, socket=msg.socket if msg else None, error_type=error_type,
                    reason=reason)
        if msg is not None:
            dead = Outcome(msg.id, "dead", error_type=error_type, error_message=reason)
            self.follow(lambda _: [(msg, dead)], False, "advancing a flow")
        if d.whole:
            deps.consumer.dead_letter(d.delivery, reason)
            self.settlement.forget(d)
        else:
            deps.transport.bury(d.queue, d.body, reason)
            self.settlement.settle([d])
        if reply_to and call_id:
            self.reply(reply_to, Outcome(call_id, "dead", error_type=error_type, error_message=reason))


def outcome_of(r: Result) -> Outcome:
    """A final call's outcome, for its workflow, its plugs and its reply (the result is
    decoded only if a workflow or a plug needs the value)."""
    return Outcome(r.msg.id, r.status, error_type=r.error_type, error_message=r.error_message,
                   traceback=r.traceback, attempts=r.msg.attempt, result_json=r.result_json)
