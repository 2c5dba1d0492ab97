"""RabbitMQ receivers without acks, each on a connection of its own: reply inboxes and
event subscriptions (exclusive, auto-delete, server-named queues)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..pika_lean import import_pika

import_pika()
from pika import exceptions as px
from pika.adapters.blocking_connection import BlockingConnection

from ..errors import Unreachable
from .amqp_connection import LOST, describe, open_connection, redact
from .base import EventStream, Inbox, unpack_replies


class _AutoAckReceiver:
    """Bodies from one auto-ack queue on a connection of its own (inboxes, event streams)."""

    _conn: BlockingConnection
    _received: deque[bytes]

    def _on_message(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        self._received.append(body)

    def _receive(self, timeout: float | None, what: str) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._received:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._conn.process_data_events(0)
                    break
                self._conn.process_data_events(time_limit=remaining)
        except LOST as exc:
            raise Unreachable(f"{what} lost its connection: {describe(exc)}") from None
        return self._received.popleft() if self._received else None

    def close(self) -> None:
        if self._conn.is_open:
            try:
                self._conn.close()
            except (px.AMQPError, OSError):
                pass


class AmqpInbox(_AutoAckReceiver, Inbox):
    """An exclusive, auto-delete, server-named queue on a connection of its own.

    Its connection has no heartbeats (TCP keepalive instead): the owner may not call
    :meth:`get` for minutes, and a missed heartbeat would delete the queue.
    """

    def __init__(self, url: str):
        self._url = url
        self._conn = open_connection(url, "inbox", heartbeat=0)
        self._received: deque[bytes] = deque()
        try:
            channel = self._conn.channel()
            self.address = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.basic_consume(self.address, self._on_message, auto_ack=True)
        except px.AMQPError as exc:
            self.close()
            raise Unreachable(f"cannot open an inbox on {redact(url)}: {describe(exc)}") from None

    def _on_message(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        self._received.extend(unpack_replies(body))

    def get(self, timeout: float | None = None) -> bytes | None:
        return self._receive(timeout, f"inbox {self.address}")


#: messages a subscriber's queue holds before RabbitMQ drops the oldest (a slow subscriber
#: loses events rather than growing the broker's memory)
EVENT_BACKLOG = 10_000


class AmqpEventStream(_AutoAckReceiver, EventStream):
    """An exclusive, auto-delete, server-named queue bound to a topic exchange with each
    pattern, on a connection of its own (no heartbeats, like :class:`AmqpInbox`)."""

    def __init__(self, url: str, exchange: str, patterns: list[str] | None):
        self._conn = open_connection(url, "events", heartbeat=0)
        self._received: deque[bytes] = deque()
        try:
            channel = self._conn.channel()
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            self.address = channel.queue_declare(
                "", exclusive=True, auto_delete=True,
                arguments={"x-max-length": EVENT_BACKLOG}).method.queue
            for pattern in patterns or ["#"]:
                channel.queue_bind(self.address, exchange, routing_key=pattern)
            channel.basic_consume(self.address, self._on_message, auto_ack=True)
        except px.AMQPError as exc:
            self.close()
            raise Unreachable(f"cannot subscribe to {exchange} on {redact(url)}: {describe(exc)}") from None

    def get(self, timeout: float | None = None) -> bytes | None:
        return self._receive(timeout, "event subscription")
