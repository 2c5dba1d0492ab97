"""The embedded transport's consumer: leases rows of the ``messages`` table, acks by
deleting them, moves a message over its delivery limit to ``dead`` (see :mod:`.sqlite`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import wake
from .base import Consumer, Delivery, reported_redeliveries
from .wake import POLL

if TYPE_CHECKING:
    from .sqlite import SqliteTransport


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

    def _settle(self, deliveries: list[Delivery], statement: str) -> bool:
        """Run ``statement`` (``{ids}`` for the placeholders) on the rows of ``deliveries``
        still leased here; False if there were none."""
        ids = self._ids(deliveries)
        if not ids:
            return False
        with self.t._tx():
            self.conn.execute(statement.format(ids=",".join("?" * len(ids))), ids)
        self.unacked.difference_update(ids)
        return True

    def ack(self, deliveries: list[Delivery]) -> None:
        self._settle(deliveries, "DELETE FROM messages WHERE id IN ({ids})")

    def nack(self, deliveries: list[Delivery]) -> None:
        if self._settle(deliveries, "UPDATE messages SET owner=NULL WHERE id IN ({ids})"):
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
