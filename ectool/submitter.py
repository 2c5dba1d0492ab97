"""Pipelined submits: a per-process submitter thread that makes Python API calls durable
in batches.

``Socket.__call__`` encodes its call in the caller's thread (bad arguments fail there, at
once), hands it to the submitter and returns the handle. The submitter collects what
arrives within :data:`LINGER` seconds (at most :data:`BATCH` calls; a call waited for before
the next is made goes at once, without lingering), commits their rows in
one statement (group commit), publishes their messages bundled per socket with pipelined
confirms on a connection of its own, and only then marks them sent. A failure marks the
calls of the batch failed: :meth:`Ticket.wait` raises :class:`SubmitError` naming them.

Crash window: rows are committed tagged ``submitting:HOST:PID:START`` in their ``host``
column and untagged once published. :func:`recover` (run when a submitter starts and by
the agents' periodic loop) publishes again the rows of a dead submitter on this host, so
no ``queued`` row stays without a message (at least once: the worker skips a call whose
outcome is recorded).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .errors import CallTimeout, SubmitError
from .store.ledger import INSERT_COLUMNS

log = logging.getLogger(__name__)

#: how long the submitter waits for more calls before it commits a batch, and its size cap
LINGER = 0.001
BATCH = 500


def process_start(pid: int) -> str | None:
    """``pid``'s start time (a reused pid tells apart), None when there is no such process."""
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


@dataclass(eq=False)
class Ticket:
    """One call on its way: set once it is durable (or failed)."""

    id: str
    socket: str
    body: bytes
    row: tuple
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def wait(self, timeout: float | None = None) -> None:
        """Until the call is durable; SubmitError if it could not be."""
        if not self.done.wait(timeout):
            raise CallTimeout(f"call {self.id} not yet durable after {timeout}s (it may still be)", [self.id])
        if self.error is not None:
            raise SubmitError(self.error, [self.id])


class Submitter:
    """The process's submitter thread (started on the first call)."""

    def __init__(self, config) -> None:
        from .events import HOST

        self.config = config
        self.pid = os.getpid()
        self.tag = f"submitting:{HOST}:{self.pid}:{process_start(self.pid)}"
        self._queue: deque[Ticket] = deque()
        self._cv = threading.Condition()
        self._put = self._finished = 0  # calls put so far; calls whose batch is finished (untagged)
        self._failed: list[Ticket] = []
        self._thread: threading.Thread | None = None
        self._stop = False
        self._last = 0  # the size of the last batch

    # -- the callers' side ------------------------------------------------------------
    def put(self, ticket: Ticket) -> Ticket:
        with self._cv:
            if self._thread is None:
                self._start()
            self._queue.append(ticket)
            self._put += 1
            self._cv.notify()
        return ticket

    def flush(self, timeout: float | None = None) -> None:
        """Until every call put so far is durable; SubmitError naming those that failed
        since the last flush."""
        with self._cv:
            target = self._put
            finished = self._cv.wait_for(lambda: self._finished >= target, timeout)
            failed, self._failed = self._failed, []
            late = [] if finished else [t.id for t in self._queue]
        if not finished:
            raise CallTimeout(f"calls not yet durable after {timeout}s (they may still be)", late)
        if failed:
            raise SubmitError(failed[0].error or "not sent", [t.id for t in failed])

    def close(self, timeout: float | None = 30.0) -> None:
        try:
            self.flush(timeout)
        finally:
            with self._cv:
                self._stop = True
                self._cv.notify()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ec-submitter", daemon=True)
        self._thread.start()
        atexit.register(_at_exit, self)

    # -- the thread ---------------------------------------------------------------------
    def _take(self) -> list[Ticket]:
        with self._cv:
            while not self._queue and not self._stop:
                self._cv.wait()
            if not self._queue:
                return []
            linger = self._last > 1 or len(self._queue) > 1
        if linger:  # calls are coming in a loop: let its next ones join this batch
            time.sleep(LINGER)
        with self._cv:  # (one call after another, each waited for, goes at once)
            n = min(len(self._queue), BATCH)
            self._last = n
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        from .publisher import Publisher
        from .transport import open_transport

        transport = publisher = None
        try:
            recover(self.config)
        except Exception as exc:  # noqa: BLE001 - a later recovery (the agents') tries again
            log.warning("recovering unsent calls failed: %s", exc)
        while True:
            batch = self._take()
            if not batch:
                break
            try:
                if publisher is None:
                    transport = open_transport(self.config)
                    publisher = Publisher(transport, self.config.namespace)
                self._send(publisher, batch)
            except Exception as exc:  # noqa: BLE001 - handed to the callers as SubmitError
                self._settle([t for t in batch if not t.done.is_set()], str(exc) or type(exc).__name__)
                from .store import reconnect

                reconnect()  # a fresh store connection too
                if transport is not None:  # a fresh connection for the next batch
                    try:
                        transport.close()
                    except Exception:  # noqa: BLE001
                        pass
                    transport = publisher = None
            with self._cv:  # flush() waits for this: sent or failed, and untagged
                self._finished += len(batch)
                self._cv.notify_all()
        if transport is not None:
            transport.close()
        from .store import reconnect

        reconnect()  # this thread's store connection

    def _send(self, publisher, batch: list[Ticket]) -> None:
        from . import events
        from .messages import bundle, bundle_size
        from .store import ledger

        try:
            ledger.insert_calls([t.row[:7] + (self.tag,) + t.row[7:] for t in batch], TAGGED_COLUMNS)
        except Exception:
            # reported not sent: should the commit have happened after all, say so in the
            # rows rather than let a recovery send them later
            self._unsent(batch, "not sent: committing its row failed")
            raise
        by_socket: dict[str, list[Ticket]] = {}
        for t in batch:
            by_socket.setdefault(t.socket, []).append(t)
        sent: list[Ticket] = []
        for socket, tickets in by_socket.items():
            try:
                target = publisher.target(socket)
                publisher.publish(target, bundle([t.body for t in tickets],
                                                 bundle_size(len(tickets), self.config.bundle),
                                                 self.config.max_message_bytes))
            except Exception as exc:  # noqa: BLE001 - nothing of this socket was confirmed
                self._unsent(tickets, str(exc))
                self._settle(tickets, f"publish failed: {exc}")
                continue
            sent += tickets
        if sent:
            self._settle(sent, None)  # durable now; the tag only tells a recovery what to resend
            try:
                ledger.untag([t.id for t in sent], self.tag)
            except Exception as exc:  # noqa: BLE001 - published: recovery may send them again
                log.warning("could not untag %d sent call(s): %s", len(sent), exc)
            for t in sent:
                events.emit("call.queued", call=t.id, socket=t.socket, root=t.row[5], parent=t.row[4],
                            flow=t.row[6])

    def _unsent(self, tickets: list[Ticket], reason: str) -> None:
        """Calls reported not sent: cancelled in the store (with ``reason``) and untagged,
        so no recovery sends them later; best effort (the store may be what failed, and
        then a recovery does publish them: at least once)."""
        from .store import ledger

        ids = [t.id for t in tickets]
        try:
            ledger.cancel_unpublished(ids, reason)
            ledger.untag(ids, self.tag)
        except Exception:  # noqa: BLE001, S110 - see above
            pass

    def _settle(self, tickets: list[Ticket], error: str | None) -> None:
        with self._cv:
            for t in tickets:
                t.error = error
                if error is not None:
                    self._failed.append(t)
        for t in tickets:
            t.done.set()


#: INSERT_COLUMNS with ``host`` (the tag) after ``flow``: a ticket's row with the tag put there
TAGGED_COLUMNS = (*INSERT_COLUMNS[:7], "host", *INSERT_COLUMNS[7:])


def _at_exit(submitter: Submitter) -> None:
    """Interpreter exit waits for durability; what failed is said on stderr."""
    import sys

    if submitter.pid != os.getpid():
        return
    try:
        submitter.close()
    except SubmitError as exc:
        print(f"ec: {exc}", file=sys.stderr)


# -- recovery --------------------------------------------------------------------------
def dead_tag(tag: str, host: str) -> bool:
    """Is ``tag`` (``submitting:HOST:PID:START``) a submitter on ``host`` no longer alive?"""
    parts = tag.split(":")
    if len(parts) < 4 or parts[1] != host:
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return True
    return process_start(pid) != ":".join(parts[3:])


def recover(config, transport=None) -> int:
    """Publish again the calls dead submitters on this host committed but may not have
    sent (their queued rows still tagged), bundled per socket; how many."""
    from .events import HOST
    from .messages import CallEncoder, bundle, bundle_size
    from .publisher import Publisher
    from .store import ledger

    rows = [r for r in ledger.submitting(HOST) if dead_tag(r.host, HOST)]
    if not rows:
        return 0
    own = transport is None
    if own:
        from .transport import open_transport

        transport = open_transport(config)
    try:
        publisher = Publisher(transport, config.namespace)
        bodies: dict[str, list[bytes]] = {}
        for row in rows:  # (only queued rows are listed: a worker's claim replaces the tag)
            target = publisher.target(row.socket)
            given = json.loads(row.args or '{"args": [], "kwargs": {}}')
            encoder = CallEncoder(target.socket, target.task, parent=row.parent, flow=row.flow,
                                  max_bytes=config.max_message_bytes)
            body, _ = encoder.encode(row.id, row.root or row.id, given.get("args", []), given.get("kwargs", {}))
            bodies.setdefault(row.socket, []).append(body)
        for socket, some in bodies.items():
            publisher.publish(publisher.target(socket), bundle(some, bundle_size(len(some), config.bundle),
                                                               config.max_message_bytes))
        for tag in {row.host for row in rows}:
            ledger.untag([row.id for row in rows if row.host == tag], tag)
        log.warning("published again %d call(s) of dead submitters", len(rows))
        return len(rows)
    finally:
        if own:
            transport.close()


def encode(client, socket: str, args: list[Any], kwargs: dict[str, Any]) -> Ticket:
    """A call to ``socket`` as a ticket (its id chosen now), in the caller's thread."""
    from .messages import CallEncoder, new_id
    from .security import require
    from .store.models import now

    require("RUN_TASK")
    t = client.target(socket)
    flow = os.environ.get("EC_FLOW") or None
    encoder = client._encoders.get(socket) if flow is None else None
    if encoder is None:
        encoder = CallEncoder(t.socket, t.task, flow=flow, reply_to=client.inbox.address,
                              max_bytes=client.config.max_message_bytes)
        if flow is None:
            client._encoders[socket] = encoder
    cid = new_id()
    body, args_json = encoder.encode(cid, cid, args, kwargs)
    stamp = now()
    return Ticket(cid, t.socket, body, (cid, stamp, stamp, t.socket, None, cid, flow, "queued", 0, args_json, stamp))
