"""The embedded transport: durable queues in one SQLite file.

Messages are rows. A consumer *leases* rows (``owner`` = host:pid:start-time of its
process) and deletes them on ack. A lease whose owner process has died is released within
about a second by any other consumer's sweep, so a ``kill -9`` redelivers promptly without
a long lease timeout. Each lease counts a delivery; a message delivered more than
``delivery_limit + 1`` times is moved to the ``dead`` table instead. Idle consumers sleep
on a wake-up socket (:mod:`.wake`) that publishers poke after each commit.

This module holds the queue tables and the producer side; the consumer (leases, acks) is
:mod:`.sqlite_consumer`, replies and event streams are :mod:`.sqlite_inbox`.
"""

from __future__ import annotations

import json
import os
import socket as _socket
import sqlite3
import time
from typing import Any

from ..errors import Unreachable, UsageError
from ..paths import private_dir, private_file
from . import wake
from .base import DeadLetter, Transport
from .sqlite_consumer import SqliteConsumer
from .sqlite_inbox import MAX_REPLY_BYTES, SqliteEventStream, SqliteInbox, send_replies
from .wake import POLL

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, max_length INTEGER);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT,
    available_at REAL NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, owner, id);
CREATE INDEX IF NOT EXISTS messages_owner ON messages (owner);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL, body BLOB NOT NULL, headers TEXT, reason TEXT NOT NULL, time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS consumers (address TEXT PRIMARY KEY, queues TEXT NOT NULL, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, exchange TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS listeners (address TEXT PRIMARY KEY, exchange TEXT NOT NULL);
"""

EVENTS_KEPT = 10_000  # the events table is trimmed to this many rows (subscribers read recent ones)
HOST = _socket.gethostname()


def _process_owner(pid: int) -> str:
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = 0.0
    return f"{HOST}:{pid}:{started:.2f}"


def owner_alive(owner: str) -> bool:
    """True unless ``owner`` names a process on this host that is gone (or was replaced)."""
    import psutil

    host, pid, started = owner.rsplit(":", 2)
    if host != HOST:
        return True  # cannot tell; the embedded transport is single-host by design
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" == started
    except (psutil.Error, ValueError):
        return False


class SqliteTransport(Transport):
    max_reply_bytes = MAX_REPLY_BYTES

    def __init__(self, url: str, *, delivery_limit: int = 5) -> None:
        from ..store import sqlite_path

        self.url = url
        self.delivery_limit = delivery_limit
        self.path = sqlite_path(url)
        self.conn = self._open()
        self._known: set[str] = set()
        self._consumers_cache: dict[str, tuple[float, list[str]]] = {}
        self._owner: str | None = None

    def _open(self) -> sqlite3.Connection:
        """Connect and create the schema; concurrent first opens retry while the file is locked."""
        deadline = time.monotonic() + 30
        while True:
            try:
                private_dir(self.path.parent)  # calls' arguments and results: owner only
                private_file(self.path)
                conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA busy_timeout=60000")
                conn.execute("PRAGMA journal_mode=wal")
                conn.execute("PRAGMA synchronous=full")
                conn.executescript(SCHEMA)
                return conn
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise Unreachable(f"broker unreachable ({self.url}): {exc}") from None
                time.sleep(0.05)
            except (sqlite3.Error, OSError) as exc:
                raise Unreachable(f"broker unreachable ({self.url}): {exc}") from None

    # -- helpers ---------------------------------------------------------------------
    @property
    def owner(self) -> str:
        if self._owner is None:
            self._owner = _process_owner(os.getpid())
        return self._owner

    def _tx(self):
        return _Tx(self.conn)

    def _require(self, queue: str) -> None:
        if queue in self._known:
            return
        if self.conn.execute("SELECT 1 FROM queues WHERE name=?", (queue,)).fetchone() is None:
            raise UsageError(f"queue {queue!r} does not exist")
        self._known.add(queue)

    def _wake(self, queue: str) -> None:
        now = time.monotonic()
        cached = self._consumers_cache.get(queue)
        if cached is None or now - cached[0] > POLL:
            rows = self.conn.execute("SELECT address FROM consumers WHERE queues LIKE ?",
                                     (f"%|{queue}|%",)).fetchall()
            cached = (now, [r[0] for r in rows])
            if cached[1]:  # never cache "nobody": a consumer may register any moment now
                self._consumers_cache[queue] = cached
        for address in cached[1]:
            wake.send(address)

    # -- Transport -------------------------------------------------------------------
    def declare(self, queue: str, *, kind: str = "quorum", max_length: int | None = None) -> None:
        with self._tx():
            self.conn.execute("INSERT INTO queues (name, max_length) VALUES (?, ?) "
                              "ON CONFLICT(name) DO UPDATE SET max_length=excluded.max_length",
                              (queue, max_length))
        self._known.add(queue)

    def publish(self, queue: str, bodies: list[bytes], *, delay: float = 0.0,
                headers: dict[str, Any] | None = None) -> None:
        self._require(queue)
        when = time.time() + max(delay, 0.0)
        encoded = json.dumps(headers) if headers else None
        with self._tx():
            limit = self.conn.execute("SELECT max_length FROM queues WHERE name=?", (queue,)).fetchone()
            if limit and limit[0] is not None:
                depth = self.conn.execute("SELECT COUNT(*) FROM messages WHERE queue=?", (queue,)).fetchone()[0]
                if depth + len(bodies) > limit[0]:
                    from ..errors import EcError

                    raise EcError(f"queue {queue!r} is full ({depth}/{limit[0]})", exit_code=3)
            self.conn.executemany(
                "INSERT INTO messages (queue, body, headers, available_at) VALUES (?, ?, ?, ?)",
                [(queue, b, encoded, when) for b in bodies])
        self._wake(queue)

    def consumer(self, queues: list[str], prefetch: int = 1, *,
                 hand_off_after: float | None = None) -> SqliteConsumer:
        for q in queues:
            self._require(q)
        return SqliteConsumer(self, queues, prefetch)

    def inbox(self) -> SqliteInbox:
        return SqliteInbox()

    def reply(self, address: str, body: bytes) -> None:
        send_replies([(address, body)])

    def replies(self, replies: list[tuple[str, bytes]]) -> None:
        send_replies(replies)

    def depth(self, queue: str) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM messages WHERE queue=? AND owner IS NULL",
                                 (queue,)).fetchone()[0]

    def bury(self, queue: str, body: bytes, reason: str) -> None:
        with self._tx():
            self.conn.execute("INSERT INTO dead (queue, body, headers, reason, time) VALUES (?, ?, NULL, ?, ?)",
                              (queue, body, reason, time.time()))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self.conn.execute("SELECT body, queue, reason, headers FROM dead ORDER BY id LIMIT ?",
                                 (limit,)).fetchall()
        return [DeadLetter(bytes(b), q, r, json.loads(h) if h else {}) for b, q, r, h in rows]

    def purge(self, queue: str) -> int:
        with self._tx():
            return self.conn.execute("DELETE FROM messages WHERE queue=? AND owner IS NULL", (queue,)).rowcount

    def delete_queue(self, queue: str) -> None:
        with self._tx():
            self.conn.execute("DELETE FROM messages WHERE queue=?", (queue,))
            self.conn.execute("DELETE FROM queues WHERE name=?", (queue,))
        self._known.discard(queue)

    def publish_events(self, exchange: str, events: list[tuple[str, bytes]]) -> None:
        """Append to the ``events`` table (trimmed to :data:`EVENTS_KEPT` rows), then wake
        the listeners; a listener whose address is gone is forgotten."""
        if not events:
            return
        try:
            # events are not durable: no fsync for them (WAL stays consistent either way)
            self.conn.execute("PRAGMA synchronous=normal")
            try:
                with self._tx():
                    self.conn.executemany("INSERT INTO events (exchange, key, body) VALUES (?, ?, ?)",
                                          [(exchange, key, body) for key, body in events])
                    last = self.conn.execute("SELECT MAX(id) FROM events").fetchone()[0]
                    self.conn.execute("DELETE FROM events WHERE id <= ?", (last - EVENTS_KEPT,))
            finally:
                self.conn.execute("PRAGMA synchronous=full")
            listeners = self.conn.execute("SELECT address FROM listeners WHERE exchange=?",
                                          (exchange,)).fetchall()
        except sqlite3.Error as exc:
            raise Unreachable(f"cannot publish events ({self.url}): {exc}") from None
        gone = [(a,) for (a,) in listeners if not wake.send(a)]
        if gone:
            with self._tx():
                self.conn.executemany("DELETE FROM listeners WHERE address=?", gone)

    def subscribe_events(self, exchange: str, patterns: list[str] | None = None) -> SqliteEventStream:
        return SqliteEventStream(self, exchange, patterns)

    def close(self) -> None:
        self.conn.close()

    # -- used by the consumer ----------------------------------------------------------
    def sweep_dead_owners(self) -> int:
        """Release leases and registrations of consumer processes that died; count released."""
        owners = {r[0] for r in self.conn.execute("SELECT DISTINCT owner FROM messages WHERE owner IS NOT NULL")}
        owners |= {r[0] for r in self.conn.execute("SELECT DISTINCT owner FROM consumers")}
        released = 0
        for owner in owners:
            if owner != self.owner and not owner_alive(owner):
                with self._tx():
                    released += self.conn.execute("UPDATE messages SET owner=NULL WHERE owner=?", (owner,)).rowcount
                    self.conn.execute("DELETE FROM consumers WHERE owner=?", (owner,))
        return released


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error) on a raw sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


__all__ = ["SqliteConsumer", "SqliteEventStream", "SqliteInbox", "SqliteTransport", "send_replies"]
