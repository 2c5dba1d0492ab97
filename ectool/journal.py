"""The record a named stream keeps (``ec map --name NAME``), so ``ec attach NAME`` can
finish it after its producer died (:mod:`ectool.attach`).

:class:`ReadAhead` reads the input ahead of the map (at most :data:`READ_AHEAD` lines) and
stores each line with the call id chosen for it *before* the line reaches the map: a
``kill -9`` of ``ec map`` can never leave a submitted call that the stream does not know,
and input already read survives its producer. :class:`Journal` records how far the stream
got: the last line durably submitted (after every submit) and the last line written, with
the output file's identity and size then (at most every :data:`EVERY` seconds, and at exit).
"""

from __future__ import annotations

import os
import queue
import socket as socket_mod
import stat
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from .messages import new_id
from .store import streams
from .stream_output import Identity, identity

READ_AHEAD = 100_000  # input lines read and stored but not yet handed to the map, at most
STORE_BATCH = 2_000  # lines per store transaction
EVERY = 0.1  # seconds between two records of the output position, at least

_EOF = object()


def output_identity(fd: int) -> Identity | None:
    """The identity and size of the file behind ``fd``, when it is a regular file."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return identity(st.st_dev, st.st_ino, st.st_size) if stat.S_ISREG(st.st_mode) else None


class Journal:
    """One stream's row: what was submitted, what was written, and how the producer ended."""

    def __init__(self, stream_id: int, out_fd: int | None, *, out_seq: int = 0, sent: int = 0,
                 ahead: int = 0) -> None:
        self.stream_id, self.out_fd = stream_id, out_fd
        #: bytes the output file holds beyond line ``out_seq`` (``ec attach`` completing what
        #: a dead producer wrote): recorded sizes leave them out
        self.ahead = ahead
        self.out_seq, self.sent_seq = out_seq, sent
        self.pending = out_seq  # the last line handed to the output, maybe still in its buffer
        self.closed = False
        self.last = 0.0
        self.lock = threading.Lock()  # the map's main thread and the read-ahead thread both write
        self.ids: deque[str] = deque()  # chosen call ids of lines handed to the map, not yet submitted
        self.record()

    @classmethod
    def start(cls, name: str, socket: str, options: str, out_fd: int | None) -> Journal:
        """A new stream named ``name`` (a finished one of that name is replaced; an
        unfinished one is refused: attach to it or delete it first)."""
        from .errors import UsageError
        from .security import require

        require("RUN_TASK")
        if not name or name != name.strip() or len(name) > 200:
            raise UsageError(f"bad stream name {name!r}: a non-empty name without leading or trailing spaces")
        old = streams.get(name)
        if old is not None:
            if old.state != "finished":
                raise UsageError(f"stream {name} is not finished: ec attach {name}, or ec delete stream {name}")
            streams.delete(name)
        row = streams.create(name, socket, options, socket_mod.gethostname(), os.getpid())
        return cls(row.id, out_fd)

    def take_ids(self, n: int) -> list[str]:
        """The call ids of the next ``n`` lines the map submits (in input order)."""
        return [self.ids.popleft() for _ in range(n)]

    def submitted(self, n: int) -> None:
        """``n`` more lines' calls are durable."""
        self.sent_seq += n
        with self.lock:
            streams.update(self.stream_id, sent=self.sent_seq)

    def written(self, seq: int) -> None:
        """Line ``seq``'s output was handed to the output (not flushed yet)."""
        self.pending = seq

    def flushed(self) -> None:
        """The output was flushed: what was written is in the file. Record the position if
        the last record is old enough."""
        self.out_seq = self.pending
        if time.monotonic() - self.last >= EVERY:
            self.record()

    def record(self, **fields: Any) -> None:
        """Record the output position now (the output must be flushed)."""
        ident = output_identity(self.out_fd) if self.out_fd is not None else None
        dev, ino, size = (ident.dev, ident.ino, ident.size - self.ahead) if ident else (None, None, None)
        with self.lock:
            streams.update(self.stream_id, out_seq=self.out_seq, out_dev=dev, out_ino=ino, out_size=size, **fields)
        self.last = time.monotonic()

    def close(self, state: str, flush=None) -> None:
        """The producer ends: ``finished``, or ``interrupted`` (attach may go on). ``flush``
        flushes the output first; if that fails, what is still buffered counts as unwritten."""
        if self.closed:
            return
        self.closed = True
        try:
            if flush is not None:
                flush()
            self.out_seq = self.pending
        except (OSError, ValueError):
            pass
        self.record(state=state, pid=None)

    def store_lines(self, first: int, lines: list[bytes], eof: bool) -> list[str]:
        """Store input lines ``first``, ... with fresh call ids; returns the ids."""
        ids = [new_id() for _ in lines]
        with self.lock:
            streams.add_lines(self.stream_id, first, lines, ids, eof)
        return ids


class ReadAhead:
    """Iterates the input for the map, each line stored (with its call id, which it appends
    to ``journal.ids``) before it is yielded. Two threads: one reads lines as they come, the
    other stores whatever has arrived in one transaction, so a fast producer costs few
    transactions and a slow one adds no delay."""

    def __init__(self, source: Iterable[bytes], journal: Journal, limit: int = READ_AHEAD) -> None:
        self.source, self.journal = source, journal
        self.room = threading.Semaphore(limit)
        self.raw: queue.SimpleQueue = queue.SimpleQueue()
        self.ready: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read, name="ec-stream-read", daemon=True).start()
        threading.Thread(target=self._store, name="ec-stream-store", daemon=True).start()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self.ready.get()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            raw, cid = item
            self.journal.ids.append(cid)
            self.room.release()
            yield raw

    def _read(self) -> None:
        try:
            for raw in self.source:
                self.room.acquire()
                self.raw.put(raw)
            self.raw.put(_EOF)
        except BaseException as exc:  # noqa: BLE001 - handed on to the map
            self.raw.put(exc)

    def _store(self) -> None:
        seq = 0
        try:
            while True:
                batch = [self.raw.get()]
                while len(batch) < STORE_BATCH and batch[-1] is not _EOF and not isinstance(batch[-1], BaseException):
                    try:
                        batch.append(self.raw.get_nowait())
                    except queue.Empty:
                        break
                end = batch[-1]
                lines = [b for b in batch if isinstance(b, bytes)]
                ids = self.journal.store_lines(seq + 1, lines, eof=end is _EOF)
                seq += len(lines)
                for pair in zip(lines, ids, strict=True):
                    self.ready.put(pair)
                if not isinstance(end, bytes):
                    self.ready.put(end)
                    return
        except BaseException as exc:  # noqa: BLE001 - a store error ends the map with it
            self.ready.put(exc)
