"""``ec attach NAME``: finish a named stream whose producer (``ec map --name``) died.

The stream's record (:mod:`ectool.store.streams`, written by :mod:`ectool.journal`) holds
every input line the producer read, with the call id chosen for it before its call was
submitted. Attach sends the lines whose submit may not have completed (after the last one
recorded as durable: a call missing from the store is submitted with its id, one still
queued is published again, at-least-once), from a thread of its own, in input order, while
it prints the outcomes in input order from where the output stopped (so output begins as
soon as the first of them are done, not after all are sent), waiting for calls still running, and records its own
position as it goes, so it may die and be attached to again. Input the producer never read
is reported, never invented.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket as socket_mod
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from .errors import CallTimeout, NotFound, UsageError
from .journal import Journal, output_identity
from .outcome import Outcome
from .security import require
from .store import ledger, streams
from .stream_output import Trim, already_written, identity
from .streaming import decode_line

log = logging.getLogger(__name__)
PAGE = 1000  # lines read from the store at once
AHEAD = 2000  # lines whose outcomes are looked for at once


@dataclass
class AttachStats:
    printed: int = 0
    failed: int = 0  # calls of the whole stream that did not end done
    total: int = 0  # lines of the stream (stored)
    resent: int = 0  # lines attach submitted itself
    unread_after: int | None = None  # the input was never read after this line
    notes: list[str] | None = None


def find(name: str) -> streams.Stream:
    row = streams.get(name)
    if row is None:
        raise NotFound(f"no stream named {name!r} (ec ls streams)")
    return row


def producer_alive(row: streams.Stream) -> bool | None:
    """Is the process recorded as writing ``row`` still running? None: it ran on another
    host, which cannot be asked."""
    if row.pid is None or row.pid == os.getpid():
        return False
    if row.host != socket_mod.gethostname():
        return None
    import psutil

    try:
        proc = psutil.Process(row.pid)
        # a pid used again since: a process started after the stream's last record is not its writer
        last = row.updated.replace(tzinfo=dt.UTC).timestamp()
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= last + 0.05
    except psutil.Error:
        return False


def claim(name: str, from_start: bool) -> streams.Stream:
    """The stream, taken over by this process; refused when unknown, still written, or
    finished (unless printed again ``from_start``)."""
    require("RUN_TASK")
    row = find(name)
    if row.state == "finished" and not from_start:
        raise UsageError(f"stream {name} is finished: all its {row.read} line(s) were written "
                         "(--from-start prints them again)")
    alive = producer_alive(row)
    if alive:
        raise UsageError(f"stream {name} is still being written by pid {row.pid} on {row.host}")
    if alive is None and row.state == "running":
        log.warning("stream %s was being written on %s (pid %s); attaching from here", name, row.host, row.pid)
    if row.state != "finished":
        streams.update(row.id, state="running", host=socket_mod.gethostname(), pid=os.getpid())
    return row


def resend_unsent(config, row: streams.Stream) -> int:
    """Submit the lines after the last durable one whose calls are missing from the store
    or still queued; return how many. The Client is made only when there are some."""
    client = None
    journal_sent, resent = row.sent, 0
    try:
        while True:
            page = streams.lines(row.id, journal_sent, PAGE)
            if not page:
                break
            known = ledger.statuses([cid for _, _, cid in page])
            todo = [(raw, cid) for _, raw, cid in page
                    if cid not in known or known[cid].status == "queued"]
            if todo:
                if client is None:
                    from .calls import Client

                    client = Client(config, store=False)  # (the store is open already)
                client.submit(row.socket, [([decode_line(raw)], {}) for raw, _ in todo], reply=False,
                              call_ids=[cid for _, cid in todo], resend=True)
                resent += len(todo)
            journal_sent = page[-1][0]
            streams.update(row.id, sent=journal_sent)
    finally:
        if client is not None:
            client.close()
    return resent


class Resender(threading.Thread):
    """:func:`resend_unsent` beside the printing; its error, if any, is raised by
    :meth:`check` in the printing thread (which would otherwise wait for calls never sent)."""

    def __init__(self, config, row: streams.Stream) -> None:
        super().__init__(name="ec-attach-resend", daemon=True)
        self.config, self.row = config, row
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from .store.models import db

        try:
            if self.row.state != "finished":  # (a finished stream's calls were all sent)
                self.count = resend_unsent(self.config, self.row)
        except BaseException as exc:  # noqa: BLE001 - handed to the printing thread
            self.error = exc
        finally:
            if not db.is_closed():
                db.close()  # this thread's own store connection

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> int:
        """How many lines were sent again (once the thread is done), or its error."""
        self.join()
        self.check()
        return self.count


class Waiter:
    """Outcomes of the stream's lines in input order, read from the store (the replies
    went to the dead producer), polling with a backoff while nothing new is final."""

    def __init__(self, stream_id: int, after: int, timeout: float | None,
                 check: Callable[[], None] = lambda: None) -> None:
        self.stream_id, self.after, self.timeout, self.check = stream_id, after, timeout, check
        self.window: deque[tuple[int, str]] = deque()  # (seq, call id) in order, not yet handed out
        self.found: dict[str, Outcome] = {}
        self.exhausted = False
        self.delay, self.moved = 0.02, time.monotonic()

    def _fill(self) -> None:
        while not self.exhausted and len(self.window) < AHEAD:
            page = streams.lines(self.stream_id, self.after, PAGE)
            self.window.extend((seq, cid) for seq, _, cid in page)
            if page:
                self.after = page[-1][0]
            if len(page) < PAGE:
                self.exhausted = True

    def next_ready(self) -> list[tuple[int, Outcome]]:
        """The next outcomes that may be printed (at least one), or [] at the end."""
        self._fill()
        while self.window:
            head = self.window[0][1]
            if head not in self.found:
                self.found.update(ledger.outcomes([cid for _, cid in self.window if cid not in self.found]))
            out = []
            while self.window and self.window[0][1] in self.found:
                seq, cid = self.window.popleft()
                out.append((seq, self.found.pop(cid)))
            if out:
                self.delay, self.moved = 0.02, time.monotonic()
                return out
            self.check()  # lines still being sent again: their sender has not failed
            idle = time.monotonic() - self.moved
            if self.timeout is not None and idle > self.timeout:
                raise CallTimeout(f"timed out after {self.timeout:g}s without a result; line {self.window[0][0]} "
                                  f"(call {head}) and {len(self.window) - 1} more are still queued or running")
            time.sleep(self.delay)
            self.delay = min(self.delay * 1.5, 1.0)
        return []


def earlier_failures(stream_id: int, through: int) -> int:
    """Calls of lines up to ``through`` that did not end done."""
    failed, after = 0, 0
    while after < through:
        page = [p for p in streams.lines(stream_id, after, PAGE) if p[0] <= through]
        if not page:
            break
        known = ledger.statuses([cid for _, _, cid in page])
        failed += sum(1 for _, _, cid in page if cid in known and known[cid].status != "done")
        after = page[-1][0]
    return failed


def attach(config, name: str, out: IO[bytes], render: Callable[[int, Outcome], bytes], *,
           from_start: bool = False, timeout: float | None = None,
           on_failed: Callable[[int, Outcome], None] = lambda seq, o: None) -> AttachStats:
    """Print stream ``name``'s remaining outcomes to ``out`` (``render`` makes a line's
    bytes); the whole stream's failures, lines sent again and unread input in the stats."""
    row = claim(name, from_start)
    stats = AttachStats(notes=[])
    resender = Resender(config, row)
    resender.start()
    start = 0 if from_start else row.out_seq
    fd = _fileno(out)
    trim = Trim(0)
    if not from_start and row.out_ino is not None:
        recorded = identity(row.out_dev, row.out_ino, row.out_size)
        skip, note = already_written(recorded, output_identity(fd) if fd is not None else None)
        trim = Trim(skip)
        if note:
            stats.notes.append(note)  # type: ignore[union-attr]
    journal = Journal(row.id, fd, out_seq=start, sent=row.sent, ahead=trim.skip) if row.state != "finished" else None
    waiter = Waiter(row.id, start, timeout, resender.check)
    stats.failed = earlier_failures(row.id, start)
    try:
        while batch := waiter.next_ready():
            for seq, outcome in batch:
                if not outcome.ok:
                    stats.failed += 1
                    on_failed(seq, outcome)
                out.write(trim(render(seq, outcome)))
                stats.printed += 1
                if journal is not None:
                    journal.written(seq)
                    journal.ahead = trim.skip
            out.flush()
            if journal is not None:
                journal.flushed()
        stats.resent = resender.finish()
    finally:
        if journal is not None:
            import sys

            journal.close("interrupted" if sys.exc_info()[0] is not None else "finished", out.flush)
    fresh = streams.get(name)
    stats.total = fresh.read if fresh else row.read
    if fresh is not None and not fresh.eof:
        stats.unread_after = fresh.read
    if trim.skip > 0:
        stats.notes.append(f"the output file holds {trim.skip} byte(s) more than the stream wrote")  # type: ignore[union-attr]
    return stats


def _fileno(out: IO[bytes]) -> int | None:
    try:
        return out.fileno()
    except (AttributeError, OSError, ValueError):
        return None
