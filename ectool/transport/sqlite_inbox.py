"""The embedded transport's replies (datagrams to an inbox's wake-up socket) and event
streams (rows appended to the ``events`` table; see :mod:`.sqlite`)."""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from typing import TYPE_CHECKING

from ..errors import Unreachable
from . import wake
from .base import EventStream, Inbox, pack_replies, topic_matches, unpack_replies
from .wake import POLL

if TYPE_CHECKING:
    from .sqlite import SqliteTransport

MAX_REPLY_BYTES = 60_000  # one datagram's worth of packed replies


def send_replies(replies: list[tuple[str, bytes]]) -> None:
    """Replies packed per inbox into few datagrams (:func:`pack_replies`): a unix datagram
    socket queues only ~10 datagrams (net.unix.max_dgram_qlen), so one per call would drop
    replies in bursts. A full inbox gets a short wait, then the store covers it."""
    for address, message in pack_replies(replies, MAX_REPLY_BYTES):
        wake.send(address, message, wait=0.05)


class SqliteInbox(Inbox):
    def __init__(self) -> None:
        self.waker = wake.Waker("ec-r")
        self.address = self.waker.address
        self.pending: deque[bytes] = deque()

    def get(self, timeout: float | None = None) -> bytes | None:
        if not self.pending:
            for datagram in self.waker.wait(timeout):
                self.pending.extend(unpack_replies(datagram))
        return self.pending.popleft() if self.pending else None

    def close(self) -> None:
        self.waker.close()


class SqliteEventStream(EventStream):
    """Reads rows appended to ``events`` after it opened; sleeps on a wake-up socket."""

    def __init__(self, transport: SqliteTransport, exchange: str, patterns: list[str] | None) -> None:
        self.conn = transport.conn
        self.t = transport
        self.exchange = exchange
        self.patterns = list(patterns) if patterns else None
        self.pending: deque[bytes] = deque()
        self.waker = wake.Waker("ec-e")
        with transport._tx():
            self.conn.execute("INSERT OR REPLACE INTO listeners (address, exchange) VALUES (?, ?)",
                              (self.waker.address, exchange))
            self.last = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]

    def _read(self) -> None:
        rows = self.conn.execute("SELECT id, key, body FROM events WHERE id > ? AND exchange = ? "
                                 "ORDER BY id LIMIT 1000", (self.last, self.exchange)).fetchall()
        for eid, key, body in rows:
            self.last = eid
            if self.patterns is None or any(topic_matches(p, key) for p in self.patterns):
                self.pending.append(bytes(body))

    def get(self, timeout: float | None = None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.pending:
            try:
                self._read()
            except sqlite3.Error as exc:
                raise Unreachable(f"cannot read events ({self.t.url}): {exc}") from None
            if self.pending:
                break
            wait = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            if wait <= 0:
                return None
            self.waker.wait(wait)
        return self.pending.popleft()

    def close(self) -> None:
        try:
            with self.t._tx():
                self.conn.execute("DELETE FROM listeners WHERE address=?", (self.waker.address,))
        except sqlite3.Error:
            pass  # publishers forget an address that no longer answers
        self.waker.close()
