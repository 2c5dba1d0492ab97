"""The streaming map behind ``ec map`` / ``ec run --lines``: one call per input line,
outcomes released in input order, at most ``window`` lines between being read and being
written.

A reader thread takes one token per line before reading it, and the writer gives the
token back once that line's outcome is written (or, unordered, once it arrived): when
``window`` lines are outstanding the reader stops reading, so a fast producer blocks on
its pipe and memory stays flat however long the input. The ordering, halting and joblog
rules are pure (:mod:`ectool.streaming`); the store and transport sit behind
:class:`ClientBackend`, which tests can replace.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from .errors import CallTimeout, UsageError
from .outcome import Outcome
from .streaming import (
    Halt,
    JobEntry,
    Release,
    SeqSet,
    StoreFallback,
    decode_line,
    format_joblog,
    job_command,
    status_exitval,
)

_EOF = object()
BATCH = 500  # lines per submit (one store transaction, one publish)
GULP_WAIT = 0.02  # while calls are in flight, lines wait this long to gather a larger batch


class Backend(Protocol):
    """Where calls go: submit values, collect outcomes, cancel, look up run details."""

    def submit(self, values: list[Any]) -> list[str]: ...

    def poll(self, timeout: float) -> list[Outcome]: ...

    def check(self, ids: list[str]) -> list[Outcome]: ...

    def cancel(self, ids: list[str]) -> int: ...

    def details(self, ids: list[str]) -> dict[str, tuple[str | None, float | None, float | None]]: ...


class Recorder(Protocol):
    """Told what was written and when the output was flushed (a named stream's
    :class:`~ectool.journal.Journal`)."""

    def written(self, seq: int) -> None: ...

    def flushed(self) -> None: ...


@dataclass
class MapStats:
    read: int = 0  # lines taken from the input (skipped ones included)
    skipped: int = 0  # lines --resume found in the joblog
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0  # calls cancelled by --halt now or a closed stdout
    halted: str | None = None  # "soon" / "now" once --halt fired
    broken_pipe: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def in_flight(self) -> int:
        return self.sent - self.succeeded - self.failed - self.cancelled


class Reader(threading.Thread):
    """Reads lines only while it holds a window token; skips the lines in ``skip``."""

    def __init__(self, source: Iterable[bytes], window: int, skip: SeqSet | None = None) -> None:
        super().__init__(name="ec-map-reader", daemon=True)
        self.source, self.skip = source, skip
        self.tokens = threading.Semaphore(window)
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        self.skipped = 0

    def run(self) -> None:
        try:
            it = iter(self.source)
            seq = 0
            while True:
                self.tokens.acquire()
                for raw in it:
                    seq += 1
                    if self.skip is None or seq not in self.skip:
                        self.lines.put((seq, raw))
                        break
                    self.skipped += 1
                else:
                    self.lines.put((seq, _EOF))
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.lines.put((-1, exc))

    def take(self, timeout: float) -> list[tuple[int, Any]]:
        """Lines read so far (up to a batch), waiting up to ``timeout`` for the first."""
        out: list[tuple[int, Any]] = []
        try:
            out.append(self.lines.get(timeout=timeout) if timeout > 0 else self.lines.get_nowait())
            while len(out) < BATCH:
                out.append(self.lines.get_nowait())
        except queue.Empty:
            pass
        return out


@dataclass
class _Job:
    seq: int
    sent_bytes: int
    command: str | None
    wall: float  # when it was read (epoch), the joblog's start if the store has none
    submitted: float = 0.0  # monotonic


class Mapper:
    """Runs the map. ``emit(seq, outcome)`` writes one released outcome and returns the
    bytes it wrote; ``progress(stats)`` is called often (it should throttle itself)."""

    def __init__(self, backend: Backend, socket: str, *, window: int, emit: Callable[[int, Outcome], int],
                 ordered: bool = True, halt: Halt | None = None, timeout: float | None = None,
                 joblog: IO[str] | None = None, skip: SeqSet | None = None,
                 progress: Callable[[MapStats], None] | None = None, flush: Callable[[], None] | None = None,
                 recorder: Recorder | None = None, decode: Callable[[Any], Any] = decode_line) -> None:
        self.backend, self.socket = backend, socket
        self.decode = decode  # an input item -> the call's value (ec map: a line; Socket.map: any)
        self.window = max(1, window)
        self.gulp = min(BATCH, max(1, self.window // 4))
        self.emit, self._flush = emit, flush or (lambda: None)
        self.recorder = recorder
        self.release = Release(ordered)
        self.halt = halt or Halt()
        self.timeout, self.joblog, self.skip = timeout, joblog, skip
        self.progress = progress or (lambda stats: None)
        self.stats = MapStats()
        self.pending: dict[str, _Job] = {}  # call id -> job, until its outcome arrives
        self.by_seq: dict[int, tuple[str, _Job]] = {}  # until released

    def run(self, source: Iterable[bytes]) -> MapStats:
        reader = Reader(source, self.window, self.skip)
        reader.start()
        eof = False
        last_progress = last_send = time.monotonic()
        fallback = StoreFallback(now=last_progress)
        try:
            while self.pending or (not eof and self.stats.halted is None):
                if self.stats.halted == "now":
                    break
                if not eof and self.stats.halted is None and (
                        not self.pending or reader.lines.qsize() >= self.gulp
                        or time.monotonic() - last_send > GULP_WAIT):
                    # few, larger submits: each is a store transaction the workers' wait on
                    items = reader.take(0.5 if not self.pending else 0.0)
                    eof = self._send(items)
                    last_send = time.monotonic()
                else:
                    items = []
                if self.pending:
                    full = self.release.outstanding >= self.window
                    wait = 0.0 if items else (0.05 if not (eof or full or self.stats.halted) else 0.5)
                    wait = max(0.0, min(wait, fallback.next - time.monotonic()))
                    outcomes = self.backend.poll(wait)
                    now = time.monotonic()
                    self._timed_replies(outcomes, fallback, now)
                    if fallback.due(now):
                        found = self._overdue(now - fallback.overdue_after)
                        fallback.checked(now, bool(found))
                        outcomes += found
                    if outcomes:
                        last_progress = now
                        fallback.moving(now)
                        self._receive(outcomes, reader)
                    else:
                        self._quiet(now - last_progress)
                else:
                    last_progress = time.monotonic()
                self.progress(self.stats)
        except BrokenPipeError:
            # the reader of our stdout went away (| head): nothing will read the rest
            self.stats.broken_pipe = True
            self._cancel_pending()
            return self.stats
        if self.stats.halted == "now":
            self._cancel_pending()
        self.stats.skipped = reader.skipped
        self.flush()
        return self.stats

    # -- internals ---------------------------------------------------------------
    def flush(self) -> None:
        self._flush()
        if self.recorder is not None:
            self.recorder.flushed()

    def _timed_replies(self, outcomes: list[Outcome], fallback: StoreFallback, now: float) -> None:
        """Tell the store fallback how long the replies among ``outcomes`` took."""
        for out in outcomes:
            job = self.pending.get(out.id)
            if job is not None:
                fallback.replied(now - job.submitted)

    def _quiet(self, idle: float) -> None:
        """No outcome this round, ``idle`` seconds since the last: time out, or flush."""
        if self.timeout is not None and idle > self.timeout:
            head = self.release.head()
            cid = self.by_seq[head][0] if head in self.by_seq else "?"
            raise CallTimeout(f"timed out after {self.timeout:g}s without a result; line {head} "
                              f"(call {cid}) and {len(self.pending) - 1} more are still queued "
                              "or running")
        self.flush()

    def _send(self, items: list[tuple[int, Any]]) -> bool:
        """Submit read lines as one batch; True once the input has ended."""
        eof = False
        jobs, values = [], []
        for seq, raw in items:
            if raw is _EOF:
                eof = True
                break
            if isinstance(raw, BaseException):
                raise raw
            value = self.decode(raw)
            values.append(value)
            jobs.append(_Job(seq, len(raw) if isinstance(raw, bytes) else 0, job_command(self.socket, value) if self.joblog else None,
                             time.time()))
        if values:
            try:
                ids = self.backend.submit(values)
            except UsageError as exc:  # a line over the size limit: name it (the batch was not sent)
                longest = max(jobs, key=lambda j: j.sent_bytes)
                raise UsageError(f"line {longest.seq}: {exc}") from None
            mono = time.monotonic()
            for cid, job in zip(ids, jobs, strict=True):
                job.submitted = mono
                self.pending[cid] = job
                self.by_seq[job.seq] = (cid, job)
                self.release.expect(job.seq)
            self.stats.sent += len(ids)
            self.stats.read = jobs[-1].seq
        return eof

    def _overdue(self, before: float) -> list[Outcome]:
        """Outcomes in the store of calls submitted before ``before`` still without one
        (``pending`` is in submission order: the overdue ones come first)."""
        stale = []
        for cid, job in self.pending.items():
            if job.submitted > before:
                break
            stale.append(cid)
        return self.backend.check(stale) if stale else []

    def _receive(self, outcomes: list[Outcome], reader: Reader) -> None:
        released: list[tuple[int, Outcome]] = []
        for out in outcomes:
            job = self.pending.pop(out.id, None)
            if job is None:
                continue  # a duplicate, or a call we gave up on
            if out.ok:
                self.stats.succeeded += 1
            else:
                self.stats.failed += 1
            released += self.release.done(job.seq, out)
            if self.stats.halted is None and self.halt.triggered(self.stats.failed, self.stats.succeeded):
                self.stats.halted = self.halt.when
                if self.halt.when == "now":
                    break
        if self.stats.halted == "now":
            return  # print nothing more
        sizes = []
        for seq, out in released:
            sizes.append(self.emit(seq, out))
            if self.recorder is not None:
                self.recorder.written(seq)
            reader.tokens.release()
        self.flush()
        if self.joblog is not None and released:
            self._log(released, sizes)
        for seq, _ in released:
            self.by_seq.pop(seq, None)

    def _log(self, released: list[tuple[int, Outcome]], sizes: list[int]) -> None:
        details = self.backend.details([out.id for _, out in released])
        for (seq, out), size in zip(released, sizes, strict=True):
            _, job = self.by_seq[seq]
            host, started, finished = details.get(out.id, (None, None, None))
            start = started or job.wall
            runtime = (finished - started) if (started and finished) else 0.0
            self.joblog.write(format_joblog(JobEntry(seq, host or ":", start, max(0.0, runtime), job.sent_bytes,  # type: ignore[union-attr]
                                                     size, status_exitval(out.status), job.command or "")))
        self.joblog.flush()  # type: ignore[union-attr]

    def _cancel_pending(self) -> None:
        ids = list(self.pending)
        if ids:
            self.stats.cancelled += self.backend.cancel(ids)


class ClientBackend:
    """The real backend: a :class:`~ectool.calls.Client` submitting to one socket.

    ``lineage()`` gives (flow, parent, root) for the calls; it is asked at the first submit,
    once a first line has arrived, so an upstream ``ec run`` in the same flow has already
    left its call id (see :mod:`ectool.flows`).
    """

    def __init__(self, client, socket: str, *, lineage: Callable[[], tuple] | None = None,
                 journal=None) -> None:
        self.client, self.socket = client, socket
        self.lineage = lineage
        self.journal = journal  # a named stream's: its lines' call ids are chosen and stored first
        self.parent = self.root = self.flow = None
        client.target(socket)  # an unknown socket fails before reading any input

    def submit(self, values: list[Any]) -> list[str]:
        if self.lineage is not None:
            self.flow, self.parent, self.root = self.lineage()
            self.lineage = None
        if self.journal is None:
            return self.client.submit(self.socket, [([v], {}) for v in values], parent=self.parent,
                                      root=self.root, flow=self.flow)
        ids = self.client.submit(self.socket, [([v], {}) for v in values], parent=self.parent, root=self.root,
                                 flow=self.flow, call_ids=self.journal.take_ids(len(values)))
        self.journal.submitted(len(ids))
        return ids

    def poll(self, timeout: float) -> list[Outcome]:
        inbox = self.client.inbox
        got: list[Outcome] = []
        body = inbox.get(timeout)
        while body is not None and len(got) < 4 * BATCH:
            out = Outcome.decode(body)
            if out is not None:
                got.append(out)
            body = inbox.get(0)
        if body is not None:
            out = Outcome.decode(body)
            if out is not None:
                got.append(out)
        big = [o.id for o in got if o.status == "done" and o.result_json is None]
        if big:  # too big for a reply: the store has the result
            from .store.ledger import outcomes

            stored = outcomes(big)
            got = [stored.get(o.id, o) for o in got]
        return got

    def check(self, ids: list[str]) -> list[Outcome]:
        from .store.ledger import outcomes

        return list(outcomes(ids).values())

    def cancel(self, ids: list[str]) -> int:
        """Cancel calls that have not started; running ones finish and are recorded."""
        from .store.ledger import cancel_many

        return cancel_many(ids)

    def details(self, ids: list[str]) -> dict[str, tuple[str | None, float | None, float | None]]:
        from .store.ledger import placements

        def epoch(t: dt.datetime | None) -> float | None:
            return t.replace(tzinfo=dt.UTC).timestamp() if t else None

        rows = placements(ids)
        return {r.id: (r.host, epoch(r.started), epoch(r.finished)) for r in rows}


def live_capacity(socket: str) -> tuple[int, int]:
    """(the socket's concurrency, workers of its processor serving now: running, with a
    fresh heartbeat and an agent not lost, :func:`ectool.runtime.live_workers`)."""
    from .runtime import live_workers
    from .store.models import Socket

    sock = Socket.get_or_none(Socket.name == socket)
    if sock is None:
        return 1, 0
    return sock.concurrency or 1, live_workers(sock.processor_id)
