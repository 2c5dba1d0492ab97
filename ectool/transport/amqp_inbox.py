"""RabbitMQ receivers without acks: reply inboxes and event subscriptions (exclusive,
auto-delete, server-named queues), each on a connection of its own, and the producer's
inbox on its transport's connection."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..pika_lean import import_pika

import_pika()
from pika import exceptions as px
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ..errors import Unreachable
from .amqp_connection import LOST, describe, open_connection, redact
from .base import EventStream, Inbox, unpack_replies

log = logging.getLogger("ectool.transport.amqp")
T = TypeVar("T")


class Producer(Protocol):
    """What a :class:`ProducerInbox` uses of its transport (:class:`~.amqp.AmqpTransport`)."""

    _conn: BlockingConnection | None

    def _connect(self) -> BlockingConnection: ...

    def _retrying(self, what: str, operation: Callable[[], T]) -> T: ...

    def _discard(self) -> None: ...


class ProducerInbox(Inbox):
    """An inbox on its transport's own connection: an exclusive, auto-delete, server-named
    queue consumed (auto-ack) on a channel of its own. One connection fewer than
    :class:`~ectool.transport.amqp_inbox.AmqpInbox`, for a short-lived client that keeps
    talking to RabbitMQ while its calls run (``ec run``). Replies are best-effort: the
    producer connection has heartbeats, which only flow while this process publishes or
    waits here, and when that connection is lost and reopened the queue is gone with it;
    :meth:`get` then only waits out its timeout and the caller reads the store (the truth).
    """

    def __init__(self, transport: Producer):
        self._transport = transport
        self._received: deque[bytes] = deque()

        def open_inbox() -> tuple[BlockingConnection, BlockingChannel, str]:
            conn = transport._connect()
            channel = conn.channel()
            address = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.basic_consume(address, self._on_message, auto_ack=True)
            return conn, channel, address

        self._conn, self._channel, self.address = transport._retrying("opening an inbox", open_inbox)

    def _on_message(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        self._received.extend(unpack_replies(body))

    def _alive(self) -> bool:
        return self._conn is self._transport._conn and self._conn.is_open and self._channel.is_open  # type: ignore[union-attr]

    def get(self, timeout: float | None = None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._received:
            remaining = None if deadline is None else deadline - time.monotonic()
            if not self._alive():  # the queue went with its connection: nothing comes here now
                time.sleep(max(0.0, min(remaining, 1.0)) if remaining is not None else 1.0)
                break
            try:
                if remaining is not None and remaining <= 0:
                    self._conn.process_data_events(0)
                    break
                self._conn.process_data_events(time_limit=remaining)
            except LOST as exc:
                log.debug("inbox %s lost its connection (%s)", self.address, describe(exc))
                self._transport._discard()
        return self._received.popleft() if self._received else None

    def close(self) -> None:
        if self._alive():
            try:
                self._channel.close()
            except (px.AMQPError, OSError):
                pass


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
