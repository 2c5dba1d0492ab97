"""Submitting calls and waiting for their outcomes (the client side of the core).

A call is written to the store (status ``queued``) and then published durably; only then
is the caller told it was sent. Outcomes are read from reply notifications when the
caller waits, with the store as the source of truth (polled as a fallback, and the only
source for ``ec wait`` in a later process).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from . import events
from .config import Config, duration
from .errors import CallTimeout, NotFound, Unreachable, UsageError
from .messages import CallEncoder, bundle, bundle_size, new_id
from .outcome import Outcome
from .publisher import Publisher, Target, broker_queue, resolve
from .replies import Replies, decode
from .security import require
from .store import ledger
from .store.ledger import INSERT_COLUMNS, INSERT_ROWS, insert_calls, outcomes  # noqa: F401 - users import them here
from .store.models import Call, now

log = logging.getLogger(__name__)

#: Client.wait reads the store once replies have been quiet this long (seconds), backing
#: off to QUIET_MAX between reads, and at least every FORCED seconds while replies flow
QUIET, QUIET_MAX, FORCED = 0.5, 2.0, 5.0
#: expected calls (pipelined, not yet waited for) whose outcome such a read looks up too, at most
ALSO_READ = 5000


class Client:
    """Submits calls and collects outcomes over one transport connection.

    ``single_connection`` (for a short-lived process such as ``ec run``): on RabbitMQ the
    inbox and the ``call.queued`` events ride the producer's connection instead of a
    connection each (the inbox's and the event thread's). Only for a process that keeps
    waiting while its calls run: a producer connection left idle loses its heartbeats and,
    with them, the inbox (outcomes then come from the store, later).
    """

    def __init__(self, config: Config, *, single_connection: bool = False, store: bool = True) -> None:
        from .store import open_store
        from .transport import open_transport

        self.config = config
        if store:  # (False: a second client of a process whose store is open, e.g. for a thread)
            open_store(config.db, user=config.user)
        self.transport = open_transport(config)
        events.configure(config)
        self._inbox = None
        self.publisher = Publisher(self.transport, config.namespace)
        self._engine = None
        self._replies = Replies()  # outcomes that arrived for calls nobody waits for yet
        self._single = single_connection and self.transport.single_connection
        self._encoders: dict = {}  # socket -> CallEncoder of pipelined submits (ectool.submitter)
        self._submitter = None

    @property
    def submitter(self):
        """This process's pipelined submitter (:mod:`ectool.submitter`), started on first use."""
        if self._submitter is None or self._submitter.pid != os.getpid():
            from .submitter import Submitter

            self._submitter = Submitter(self.config)
        return self._submitter

    def expect(self, call_id: str) -> None:
        """A call whose outcome someone may wait for here (a pipelined call's): a wait that
        reads the store for a missing reply reads its outcome too (:mod:`ectool.replies`)."""
        self._replies.expect(call_id)

    def flush(self, timeout: float | None = None) -> None:
        """Until every pipelined call of this client is durable (SubmitError names those
        that could not be made so)."""
        if self._submitter is not None:
            self._submitter.flush(timeout)

    def target(self, socket_name: str) -> Target:
        return self.publisher.target(socket_name)

    @property
    def engine(self):
        """The workflow engine this client starts workflows with (sharing its lookups)."""
        if self._engine is None:
            from .engine import Engine

            self._engine = Engine(self.transport, self.config.max_message_bytes, self.config.namespace,
                                  publisher=self.publisher)
        return self._engine

    @property
    def inbox(self):
        if self._inbox is None:
            self._inbox = self.transport.producer_inbox() if self._single else self.transport.inbox()
        return self._inbox

    def submit(self, socket_name: str, calls: Sequence[tuple[list[Any], dict[str, Any]]], *,
               parent: str | None = None, root: str | None = None, flow: str | None = None,
               reply: bool = True, cont: dict | None = None, call_ids: Sequence[str] | None = None,
               resend: bool = False, pin: str | None = None, replay_of: str | None = None) -> list[str]:
        """Durably submit one call per (args, kwargs) to a socket; returns their ids in order.

        The rows are committed first (status ``queued``), then the messages published and
        confirmed; only then does this return. Many calls travel bundled, several to a
        message (:func:`~ectool.messages.bundle_size`, the ``bundle`` setting).
        ``call_ids`` gives the calls ids chosen beforehand (a named stream records them
        first); with ``resend`` a row that already exists is kept and its message published
        again (a submit the producer may not have finished: at-least-once, the worker skips
        a call whose outcome is recorded). ``pin`` asks workers to run the calls at that
        commit of the processor and ``replay_of`` links them to the call they replay
        (:mod:`ectool.replay`).
        """
        require("RUN_TASK")
        t = self.target(socket_name)
        reply_to = self.inbox.address if reply else None
        flow = flow or os.environ.get("EC_FLOW") or None
        encoder = CallEncoder(t.socket, t.task, parent=parent, flow=flow, reply_to=reply_to, cont=cont,
                              max_bytes=self.config.max_message_bytes, pin=pin)
        stamp = now()
        ids, messages, params = [], [], []
        chosen = iter(call_ids) if call_ids is not None else None
        for args, kwargs in calls:
            cid = next(chosen) if chosen is not None else new_id()
            body, args_json = encoder.encode(cid, root or cid, args, kwargs)
            ids.append(cid)
            messages.append(body)
            # the columns of INSERT_COLUMNS, in order
            params.append((cid, stamp, stamp, t.socket, parent, root or cid, flow, "queued", 0, args_json, stamp)
                          + ((replay_of,) if replay_of else ()))
        insert_calls(params, (*INSERT_COLUMNS, "replay_of") if replay_of else INSERT_COLUMNS, ignore_existing=resend)
        try:
            self.publisher.publish(t, bundle(messages, bundle_size(len(messages), self.config.bundle),
                                             self.config.max_message_bytes))
        except Exception as exc:
            # nothing was confirmed: say so in the store rather than leave phantom queued calls
            if not resend:  # (a resent call may have been published before)
                ledger.cancel_unpublished(ids, str(exc))
            raise
        if self._single:
            self._queued_events(t, ids, root, parent, flow)
        else:
            emit = events.emit
            for cid in ids:
                emit("call.queued", call=cid, socket=t.socket, root=root or cid, parent=parent, flow=flow)
        return ids

    def _queued_events(self, t: Target, ids: list[str], root: str | None, parent: str | None,
                       flow: str | None) -> None:
        """``call.queued`` for ``ids`` on the producer's connection, now, best-effort (no
        event thread, no connection of its own); the same events :func:`events.emit` makes."""
        bus = events.bus()
        if not bus.enabled:
            return
        stamp, pid = round(time.time(), 3), os.getpid()
        wire = []
        for cid in ids:
            event = {"time": stamp, "kind": "call.queued", "host": events.HOST, "pid": pid, "call": cid,
                     "socket": t.socket, "root": root or cid}
            if parent is not None:
                event["parent"] = parent
            if flow is not None:
                event["flow"] = flow
            wire.append(("call.queued", events.encode(event)))
        try:
            self.transport.publish_events(events.exchange_name(self.config.namespace), wire)
            bus.sent += len(wire)
        except Exception:  # noqa: BLE001 - events are best-effort
            bus.dropped += len(wire)

    def wait(self, ids: Iterable[str], timeout: float | None = None) -> dict[str, Outcome]:
        """Wait until every call in ``ids`` is final; :class:`CallTimeout` lists those that are not.

        Outcomes come from reply notifications while they flow. The store (the truth) is
        read once replies have been quiet for :data:`QUIET` seconds (backing off to
        :data:`QUIET_MAX`), and at least every :data:`FORCED` seconds however busy the
        inbox is, so a lost reply costs at most that long and a busy wait does not read
        every pending row again and again.
        """
        pending = set(ids)
        done = self._replies.take(pending)
        pending.difference_update(done)
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        gap, last_reply, last_read = QUIET, start, start
        while pending:
            now_ = time.monotonic()
            if deadline is not None and now_ >= deadline:
                raise CallTimeout(f"timed out waiting for {len(pending)} call(s): {' '.join(sorted(pending)[:5])}",
                                  sorted(pending))
            if now_ - last_reply >= gap or now_ - last_read >= FORCED:
                # the other calls this client expects too: their replies may be lost alike
                for out in outcomes([*pending, *self._replies.expected(pending, ALSO_READ)]).values():
                    if out.id in pending:
                        done[out.id] = out
                        pending.discard(out.id)
                    else:
                        self._replies.keep(out)
                gap = min(gap * 1.5, QUIET_MAX)
                last_reply = last_read = time.monotonic()
                continue
            wait = min(last_reply + gap, last_read + FORCED) - now_
            if deadline is not None:
                wait = min(wait, deadline - now_)
            came, got = self._take_reply(wait)
            if came:
                last_reply = time.monotonic()
            if got is None:
                continue
            if got.id in pending:
                done[got.id] = got
                pending.discard(got.id)
            else:
                self._replies.keep(got)
        self._replies.settled(done)
        return done

    def _take_reply(self, wait: float) -> tuple[bool, Outcome | None]:
        """Wait up to ``wait`` seconds for a reply: (whether one came, its outcome if it
        decodes). Without an inbox (or when its node just went away) the store is the truth."""
        if self._inbox is None:
            time.sleep(max(wait, 0.0))
            return False, None
        try:
            body = self._inbox.get(max(wait, 0.0))
        except Unreachable as exc:  # its node went away (a cluster fails over): the store has the truth
            log.info("replies stopped (%s); reading outcomes from the store", exc)
            self._inbox.close()
            self._inbox = None
            return False, None
        if not body:
            return False, None
        return True, decode(body)

    def call(self, socket_name: str, args: list[Any], kwargs: dict[str, Any] | None = None,
             timeout: float | None = None) -> Outcome:
        """Submit one call and wait for its outcome."""
        cid = self.submit(socket_name, [(args, kwargs or {})])[0]
        return self.wait([cid], timeout)[cid]

    def close(self) -> None:
        try:
            if self._submitter is not None and self._submitter.pid == os.getpid():
                self._submitter.close()
        finally:
            if self._inbox is not None:
                self._inbox.close()
            self.transport.close()


def wait_stored(ids: Sequence[str], timeout: float | None = None) -> dict[str, Outcome]:
    """Wait by polling the store only (for calls submitted by another process)."""
    for cid in ids:
        get_call(cid)
    pending, done = set(ids), {}
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.05
    while True:
        for out in outcomes(pending).values():
            done[out.id] = out
            pending.discard(out.id)
        if not pending:
            return done
        if deadline is not None and time.monotonic() >= deadline:
            raise CallTimeout(f"timed out waiting for {len(pending)} call(s)", sorted(pending))
        time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 1.5, 1.0)


def get_call(call_id: str) -> Call:
    row = ledger.get(call_id)
    if row is None:
        raise NotFound(f"no call with id {call_id!r}")
    return row


def call_log(call_id: str) -> str | None:
    """What a call printed (its ``log``), or None."""
    return ledger.log_of(call_id)


def call_logs(call_id: str) -> list[tuple[Call, str]]:
    """The logs of ``call_id``: its own, or for a workflow or shell flow every member's
    (in submission order), as (call, log) pairs; calls that printed nothing are left out."""
    require("READ_CALL")
    row = get_call(call_id)
    if row.log is not None or row.root != row.id:
        return [(row, row.log)] if row.log else []
    members = ledger.family(row.id, row.socket == "flow", with_log=True)
    return [(m, m.log) for m in members if m.log]


def cancel(call_id: str) -> bool:
    """Cancel a call that has not started; False if it already ran or is running."""
    require("CANCEL_TASK")
    get_call(call_id)
    return ledger.cancel(call_id)


def parse_since(text: str) -> dt.datetime:
    """``30s``, ``10m``, ``2h``, ``1d`` -> the UTC time that long ago."""
    try:
        seconds = duration(text)
    except ValueError:
        raise UsageError(f"bad duration {text!r}: use e.g. 30s, 10m, 2h, 1d") from None
    if seconds < 0:
        raise UsageError(f"bad duration {text!r}: it must not be negative")
    try:
        return now() - dt.timedelta(seconds=seconds)
    except OverflowError:  # longer ago than datetime goes: since the beginning
        return dt.datetime.min


CALL_COLUMNS = ["id", "socket", "status", "attempts", "submitted", "started", "finished", "host",
                "worker_pid", "processor", "commit", "runtime", "replay_of", "parent", "root", "flow", "result",
                "error_type", "error_message"]
COMMIT_PREFIX = re.compile(r"[0-9a-f]{1,40}(-dirty)?")


def call_row(row: Call) -> dict[str, Any]:
    out = {}
    for col in CALL_COLUMNS + ["traceback"]:
        value = getattr(row, col)
        if hasattr(value, "isoformat"):
            value = value.isoformat(timespec="milliseconds")
        out[col] = value
    if out["result"] is not None:
        try:
            out["result"] = json.loads(out["result"])
        except ValueError:
            pass
    return out


def list_calls(*, status: str | None = None, socket: str | None = None, since: str | None = None,
               limit: int = 100, ids: Sequence[str] | None = None, flow: str | None = None,
               commit: str | None = None) -> list[Call]:
    """Calls matching every filter, newest first; ``commit`` a prefix of the commit that ran them."""
    require("READ_CALL")
    if commit is not None and not COMMIT_PREFIX.fullmatch(commit):
        raise UsageError(f"bad commit {commit!r}: give a hexadecimal prefix of a git commit")
    return ledger.select(status=status, socket=socket, since=parse_since(since) if since else None,
                         limit=limit, ids=ids, flow=flow, commit=commit)


def call_tree(call_id: str) -> tuple[Call, dict[str | None, list[Call]]]:
    """The root of ``call_id``'s workflow and a parent -> children map of every call in it."""
    require("READ_CALL")
    row = get_call(call_id)
    root = get_call(row.root) if row.root and row.root != row.id else row
    # a shell flow (ectool.flows): workflows started in it too
    members = ledger.family(root.id, root.socket == "flow")
    children: dict[str | None, list[Call]] = {}
    for m in members:
        if m.id != root.id:
            children.setdefault(m.parent or root.id, []).append(m)
    return root, children


def list_runtime(kind: str, everything: bool = False) -> list[dict[str, Any]]:
    """Workers (all, with ``everything``; else those not stopped), agents or nodes as rows,
    each with its shown status (:mod:`ectool.runtime`: a stale heartbeat is ``lost``)."""
    from . import runtime
    from .metrics.usage import sample

    require(f"READ_{kind.upper()}")
    if kind == "worker":
        rows = runtime.worker_rows(everything)
        sample(rows)
        return rows
    if kind == "node":
        return runtime.node_rows()
    return runtime.agent_rows()


_ = (Unreachable, broker_queue, resolve)  # re-exported: ectool.calls.broker_queue, ...
