"""The embedded transport: durable queues in one SQLite file.

Messages are rows. A consumer *leases* rows (``owner`` = host:pid:start-time of its
process) and deletes them on ack. A lease whose owner process has died is released within
about a second by any other consumer's sweep, so a ``kill -9`` redelivers promptly without
a long lease timeout. Each lease counts a delivery; a message delivered more than
``delivery_limit + 1`` times is moved to the ``dead`` table instead. Idle consumers sleep
on a wake-up socket (:mod:`.wake`) that publishers poke after each commit.
"""

from __future__ import annotations

import json
import os
import socket as _socket
import sqlite3
import time
from collections import deque
from typing import Any

from ..errors import Unreachable, UsageError
from ..paths import private_dir, private_file
from . import wake
from .base import (
    DEAD_QUEUE,
    Consumer,
    DeadLetter,
    Delivery,
    EventStream,
    Inbox,
    Transport,
    pack_replies,
    reported_redeliveries,
    topic_matches,
    unpack_replies,
)

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

POLL = 1.0  # fallback poll and dead-owner sweep interval, seconds
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
    max_reply_bytes = 60_000

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


class SqliteConsumer(Consumer):
    def __init__(self, transport: SqliteTransport, queues: list[str], prefetch: int) -> None:
        self.t = transport
        self.conn = transport.conn
        self.queues = list(queues)
        self.prefetch = max(1, prefetch)
        self.buffer: deque[Delivery] = deque()
        self.unacked: set[int] = set()
        self.waker = wake.Waker("ec-c")
        self.last_sweep = 0.0
        self._in = ",".join("?" * len(self.queues))
        with self.t._tx():
            self.conn.execute("INSERT OR REPLACE INTO consumers (address, queues, owner) VALUES (?, ?, ?)",
                              (self.waker.address, "|" + "|".join(self.queues) + "|", self.t.owner))

    def _lease(self) -> float | None:
        """Lease ready rows into the buffer; return when the next delayed one is due (or None)."""
        room = self.prefetch - len(self.unacked)
        if room <= 0:
            return None
        now = time.time()
        limit = self.t.delivery_limit
        with self.t._tx():
            rows = self.conn.execute(
                f"SELECT id, queue, body, headers, deliveries FROM messages WHERE queue IN ({self._in})"
                f" AND owner IS NULL AND available_at <= ? ORDER BY id LIMIT ?",
                (*self.queues, now, room)).fetchall()
            leased: list[Any] = []
            dead: list[Any] = []
            for row in rows:
                (dead if row[4] > limit else leased).append(row)
            for mid, queue, body, headers, count in dead:
                self.conn.execute(
                    "INSERT INTO dead (queue, body, headers, reason, time) VALUES (?, ?, ?, ?, ?)",
                    (queue, body, headers, f"delivery limit exceeded: delivered {count} times (limit {limit})", now))
                self.conn.execute("DELETE FROM messages WHERE id=?", (mid,))
            if leased:
                ids = [r[0] for r in leased]
                self.conn.execute(
                    f"UPDATE messages SET owner=?, deliveries=deliveries+1 WHERE id IN ({','.join('?' * len(ids))})",
                    (self.t.owner, *ids))
            nxt = None
            if not rows:
                nxt = self.conn.execute(
                    f"SELECT MIN(available_at) FROM messages WHERE queue IN ({self._in}) AND owner IS NULL",
                    self.queues).fetchone()[0]
        for mid, queue, body, headers, count in leased:
            self.unacked.add(mid)
            extra = json.loads(headers) if headers else {}
            self.buffer.append(Delivery(bytes(body), queue, mid, reported_redeliveries(count, extra), extra))
        return nxt

    def get(self, timeout: float | None = None) -> Delivery | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.buffer:
                return self.buffer.popleft()
            nxt = self._lease()
            if self.buffer:
                return self.buffer.popleft()
            now = time.monotonic()
            if now - self.last_sweep >= POLL:
                self.last_sweep = now
                if self.t.sweep_dead_owners():
                    continue
            if deadline is not None and now >= deadline:
                return None
            wait = POLL
            if nxt is not None:
                wait = min(wait, max(0.0, nxt - time.time()) + 0.001)
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            self.waker.wait(wait)

    def _ids(self, deliveries: list[Delivery]) -> list[int]:
        return [d.tag for d in deliveries if d.tag in self.unacked]

    def ack(self, deliveries: list[Delivery]) -> None:
        ids = self._ids(deliveries)
        if not ids:
            return
        with self.t._tx():
            self.conn.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(ids))})", ids)
        self.unacked.difference_update(ids)

    def nack(self, deliveries: list[Delivery]) -> None:
        ids = self._ids(deliveries)
        if not ids:
            return
        with self.t._tx():
            self.conn.execute(f"UPDATE messages SET owner=NULL WHERE id IN ({','.join('?' * len(ids))})", ids)
        self.unacked.difference_update(ids)
        for q in {d.queue for d in deliveries}:
            self.t._wake(q)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        if delivery.tag not in self.unacked:
            return
        with self.t._tx():
            self.conn.execute(
                "INSERT INTO dead (queue, body, headers, reason, time) SELECT queue, body, headers, ?, ?"
                " FROM messages WHERE id=?", (reason, time.time(), delivery.tag))
            self.conn.execute("DELETE FROM messages WHERE id=?", (delivery.tag,))
        self.unacked.discard(delivery.tag)

    def close(self) -> None:
        """Return unacked deliveries; never-handed-out ones do not count as deliveries."""
        try:
            with self.t._tx():
                unstarted = [d.tag for d in self.buffer]
                if unstarted:
                    self.conn.execute(
                        f"UPDATE messages SET owner=NULL, deliveries=MAX(deliveries-1, 0) "
                        f"WHERE id IN ({','.join('?' * len(unstarted))})", unstarted)
                if self.unacked:
                    ids = list(self.unacked)
                    self.conn.execute(f"UPDATE messages SET owner=NULL WHERE id IN ({','.join('?' * len(ids))})", ids)
                self.conn.execute("DELETE FROM consumers WHERE address=?", (self.waker.address,))
        except sqlite3.Error:
            pass  # our owner is gone with us; other consumers' sweeps release the leases
        queues = {d.queue for d in self.buffer} | set(self.queues)
        self.buffer.clear()
        self.unacked.clear()
        self.waker.close()
        for q in queues:
            self.t._consumers_cache.pop(q, None)
            self.t._wake(q)


def send_replies(replies: list[tuple[str, bytes]]) -> None:
    """Replies packed per inbox into few datagrams (:func:`pack_replies`): a unix datagram
    socket queues only ~10 datagrams (net.unix.max_dgram_qlen), so one per call would drop
    replies in bursts. A full inbox gets a short wait, then the store covers it."""
    for address, message in pack_replies(replies, SqliteTransport.max_reply_bytes):
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


_ = DEAD_QUEUE
