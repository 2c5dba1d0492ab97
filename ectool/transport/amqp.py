"""RabbitMQ transport (pika): durable queues, publisher confirms, delay queues, dead letters.

Topology, all durable:

* work queues are quorum queues (``x-delivery-limit`` = the transport's ``delivery_limit``)
  or classic queues; both dead-letter to the fanout exchange ``ec.dead``, bound to the
  queue ``ec.dead`` (a quorum queue when ec creates it);
* ``ec.delay.<queue>.<ms>`` holds delayed messages: a classic queue whose messages expire
  after ``ms`` and are then dead-lettered to ``<queue>`` through the default exchange. The
  delay is rounded up to two significant digits so that few such queues exist, and each
  vanishes a minute after its last message (``x-expires``). On a cluster it lives on one
  node; while that node is down ``ec.delay.<queue>.<ms>.<n>`` (n = 1, 2, ...) stands in;
* inboxes are exclusive, auto-delete, server-named queues fed through the default exchange;
* events go to a durable topic exchange (``ec.events``; routing key = event kind) as
  non-persistent messages without confirms; each subscriber binds an exclusive,
  auto-delete, length-bounded queue of its own to it.

Producers (:class:`AmqpTransport`) are single-threaded: one connection, a confirm channel
for publishing and a plain channel for everything else. A lost connection is reopened and
the unconfirmed part of a batch published again (duplicates are possible, loss is not).
Consumers (with their own I/O thread) are in ``amqp_consumer.py``, inboxes and event
streams in ``amqp_inbox.py``, connections in ``amqp_connection.py``, confirm bookkeeping
in ``amqp_confirms.py``; none imports this module. Every pika
exception is translated to an :mod:`ectool.errors` type at the edge of these modules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..pika_lean import import_pika

import_pika()
from pika import exceptions as px
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import BasicProperties

from ..errors import EcError, Unreachable, UsageError
from .amqp_confirms import Batch, HomeNodeDown, QueueMissing, Refused
from .amqp_connection import (
    DELAY_ALTERNATES,
    LOST,
    NOT_FOUND,
    PRECONDITION_FAILED,
    dead_letter_from,
    declare_dead_topology,
    delay_queue,
    describe,
    open_connection,
)
from .amqp_consumer import AmqpConsumer
from .amqp_inbox import AmqpEventStream, AmqpInbox, ProducerInbox
from .base import (
    DEAD_QUEUE,
    Consumer,
    DeadLetter,
    EventStream,
    Inbox,
    Transport,
    pack_replies,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECT_WINDOW = 30.0  # how long a producer keeps trying to get a lost connection back
CONFIRM_TIMEOUT = 30.0  # no publisher confirm for this long: give up
NACK_RETRIES = 7  # messages the broker refused (nacked) are sent again this often, then an error
NACK_PAUSE = 0.25  # seconds before the first resend of refused messages, doubling up to 2 s (9.75 s in all)
IDLE_CHECK = 5.0  # a producer connection used more recently than this (s) is not checked first
PUMP_EVERY = 500  # while pipelining a batch, flush output every this many messages


EVENT_PROPERTIES = BasicProperties(delivery_mode=1, content_type="application/json")
REPLY_PROPERTIES = BasicProperties(delivery_mode=1)  # replies are best-effort (the store has outcomes)
PACK_REPLY_BYTES = 256 * 1024  # replies to one inbox share a message up to this size


# -- the transport -----------------------------------------------------------------------


def _wake() -> None:
    pass


class AmqpTransport(Transport):
    """A producer-side connection to RabbitMQ; consumers and inboxes open their own
    (except :meth:`producer_inbox`)."""

    #: publish raises QueueMissing with the bodies that came back unroutable (a client may
    #: then declare the queue and send them again instead of declaring before every use)
    returns_unroutable = True
    single_connection = True

    def __init__(self, url: str, *, delivery_limit: int = 5):
        self.url = url
        self.delivery_limit = delivery_limit
        self._conn: BlockingConnection | None = None
        self._admin: BlockingChannel | None = None  # declare, depth, purge, ...
        self._pub: BlockingChannel | None = None  # confirm mode, publish only
        self._replies: BlockingChannel | None = None  # no confirms, best effort
        self._events: BlockingChannel | None = None  # no confirms, best effort
        self._exchanges: set[str] = set()  # event exchanges declared on self._events
        self._seq = 0  # publish sequence number on self._pub
        self._batch: Batch | None = None
        self._dead_declared = False
        self._last_io = 0.0  # monotonic time of the last operation that went through
        self._connect()

    # connection management

    def _connect(self) -> BlockingConnection:
        if self._conn is None or not self._conn.is_open:
            self._discard()
            self._conn = open_connection(self.url, "producer")
        return self._conn

    def _check_idle_connection(self) -> None:
        """Notice, quietly, a connection the broker closed while we were idle (missed
        heartbeats), so the next operation does not fail on it first; then connect. A
        connection that did I/O within :data:`IDLE_CHECK` seconds cannot have missed two
        heartbeats: no extra poll per publish (if it was lost anyway, the operation fails
        on it and is retried on a new one, as for a loss mid-operation)."""
        if (self._conn is not None and self._conn.is_open
                and time.monotonic() - self._last_io >= IDLE_CHECK):
            try:
                self._conn.process_data_events(0)
            except LOST as exc:
                log.debug("idle connection was closed (%s); reconnecting", describe(exc))
                self._discard()
        self._connect()

    def _discard(self) -> None:
        """Forget the connection and its channels (closing them if still open)."""
        conn, self._conn = self._conn, None
        self._admin = self._pub = self._replies = self._events = None
        self._dead_declared = False
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except (px.AMQPError, OSError):
                pass

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, reconnecting with backoff while the connection is lost.

        Other pika errors (a refusal by the broker, a name too long) become UsageError.
        """
        deadline = time.monotonic() + RECONNECT_WINDOW
        pause = 0.1
        while True:
            try:
                self._check_idle_connection()
                result = operation()
                self._last_io = time.monotonic()
                return result
            except (*LOST, Unreachable) as exc:
                self._discard()
                detail = str(exc) if isinstance(exc, Unreachable) else describe(exc)
                if time.monotonic() + pause > deadline:
                    raise Unreachable(f"lost RabbitMQ while {what}: {detail}") from None
                log.warning("connection to RabbitMQ lost while %s (%s); retrying in %.1fs",
                            what, detail, pause)
            except px.AMQPError as exc:
                self._discard()  # the channels may be in any state: start afresh next time
                raise UsageError(f"RabbitMQ refused {what}: {describe(exc)}") from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _admin_channel(self) -> BlockingChannel:
        conn = self._connect()
        if not self._dead_declared:
            declare_dead_topology(conn)
            self._dead_declared = True
        if self._admin is None or not self._admin.is_open:
            self._admin = conn.channel()
        return self._admin

    def _publish_channel(self) -> BlockingChannel:
        if self._pub is None or not self._pub.is_open:
            channel = self._connect().channel()
            channel._impl.add_on_return_callback(self._on_return)
            channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm)
            self._pub, self._seq = channel, 0
        return self._pub

    def _on_confirm(self, frame: Any) -> None:
        batch = self._batch
        if batch is None:
            return
        batch.on_confirm(frame.method)
        if not batch.pending and self._conn is not None:
            self._conn.call_later(0, _wake)  # wake up process_data_events()

    def _on_return(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        if self._batch is not None:  # Basic.Return precedes the Basic.Ack of that message
            self._batch.returned.append(body)

    def _on_queue(self, queue: str, operation: Callable[[BlockingChannel], T],
                  missing: Callable[[], T] | None = None) -> T:
        """``operation(admin channel)``; a 404 calls ``missing`` (or raises UsageError)."""
        try:
            return operation(self._admin_channel())
        except px.ChannelClosedByBroker as exc:
            self._admin = None
            if exc.reply_code == NOT_FOUND and "home node" in (exc.reply_text or ""):
                raise HomeNodeDown(f"queue {queue!r} is on a RabbitMQ node that is down: "
                                   f"{describe(exc)}") from None
            if exc.reply_code == NOT_FOUND:
                if missing is not None:
                    return missing()
                raise UsageError(f"queue {queue!r} does not exist") from None
            raise UsageError(f"RabbitMQ refused an operation on {queue!r}: "
                             f"{describe(exc)}") from None

    def _declare(self, queue: str, arguments: dict[str, Any]) -> None:
        def operation(channel: BlockingChannel) -> None:
            try:
                channel.queue_declare(queue, durable=True, arguments=arguments)
            except px.ChannelClosedByBroker as exc:
                if exc.reply_code != PRECONDITION_FAILED:
                    raise
                self._admin = None
                log.warning("queue %s exists with other settings (%s); using it as it is",
                            queue, exc.reply_text)

        self._on_queue(queue, operation)

    def _delay_queue(self, queue: str, delay: float) -> str:
        """Declare (and so keep alive) the delay queue feeding ``queue`` after ``delay``.

        A delay queue is a classic queue, on one node of a cluster: while that node is down
        an alternate (``NAME.1``, ``NAME.2``, ...) on a running node takes the messages (what
        the first one holds comes back with its node)."""
        self._on_queue(queue, lambda channel: channel.queue_declare(queue, passive=True))
        name, arguments = delay_queue(queue, delay)
        for alternate in range(DELAY_ALTERNATES + 1):
            target = f"{name}.{alternate}" if alternate else name
            try:
                self._declare(target, arguments)
                return target
            except HomeNodeDown as exc:
                log.info("%s; trying an alternate delay queue", exc)
        raise HomeNodeDown(f"no delay queue for {queue!r} is on a running RabbitMQ node "
                           f"(tried {DELAY_ALTERNATES + 1})")

    # Transport

    def declare(self, queue: str, *, kind: str = "quorum", max_length: int | None = None) -> None:
        if kind not in ("quorum", "classic"):
            raise UsageError(f"unknown queue kind {kind!r} (quorum or classic)")
        arguments: dict[str, Any] = {"x-dead-letter-exchange": DEAD_QUEUE}
        if kind == "quorum":
            arguments |= {"x-queue-type": "quorum", "x-delivery-limit": self.delivery_limit}
        if max_length is not None:
            arguments |= {"x-max-length": int(max_length), "x-overflow": "reject-publish"}
        self._retrying(f"declaring {queue!r}", lambda: self._declare(queue, arguments))

    def publish(self, queue: str, bodies: list[bytes], *, delay: float = 0.0,
                headers: dict[str, Any] | None = None) -> None:
        todo = list(bodies)
        if not todo:
            return
        properties = BasicProperties(delivery_mode=2, headers=dict(headers) if headers else None)
        returned: list[bytes] = []  # settled but not enqueued, over every attempt
        refusals = 0

        def attempt() -> None:
            nonlocal todo, refusals
            target = self._delay_queue(queue, delay) if delay > 0 else queue
            try:
                batch = self._publish_batch(target, todo, properties)
            except LOST:
                if self._batch is not None:
                    returned.extend(self._batch.returned)
                    todo = self._batch.unconfirmed(todo) + self._batch.refused(todo)
                raise
            finally:
                self._batch = None
            returned.extend(batch.returned)
            refused = batch.refused(todo)
            if refused:  # first: a caller that resends what QueueMissing returns must not lose these
                refusals += 1
                if refusals > NACK_RETRIES:
                    raise EcError(f"RabbitMQ refused {len(refused)} of {len(bodies)} messages "
                                  f"for {queue!r} (is the queue full?)")
                todo = refused
                raise Refused(len(refused))
            if returned:
                raise QueueMissing(queue, returned)

        pause = NACK_PAUSE
        while True:
            try:
                self._retrying(f"publishing to {queue!r}", attempt)
                return
            except Refused as refused:
                # a quorum queue nacks while its leader moves to another node (a node lost),
                # and a full queue (max_length) nacks until it drains: both may pass
                log.warning("RabbitMQ refused %s message(s) for %r; sending them again in %.2fs",
                            refused, queue, pause)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _publish_batch(self, target: str, bodies: list[bytes],
                       properties: BasicProperties) -> Batch:
        """Publish every body without waiting, then wait for all their confirms."""
        channel = self._publish_channel()
        conn = self._connect()
        batch = self._batch = Batch(self._seq + 1)
        for body in bodies:
            channel._impl.basic_publish("", target, body, properties, mandatory=True)
            self._seq += 1
            batch.pending.add(self._seq)
            batch.sent += 1
            if batch.sent % PUMP_EVERY == 0:
                conn.process_data_events(0)  # flush output, take in confirms so far
        waiting, last_progress = len(batch.pending), time.monotonic()
        while batch.pending:
            conn.process_data_events(time_limit=1.0)
            if len(batch.pending) < waiting:
                waiting, last_progress = len(batch.pending), time.monotonic()
            elif time.monotonic() - last_progress > CONFIRM_TIMEOUT:
                self._discard()
                raise Unreachable(f"RabbitMQ did not confirm {waiting} messages for "
                                  f"{target!r} within {CONFIRM_TIMEOUT:.0f}s")
        return batch

    def consumer(self, queues: list[str], prefetch: int = 1, *,
                 hand_off_after: float | None = None) -> Consumer:
        return AmqpConsumer(self.url, list(queues), prefetch, hand_off_after=hand_off_after)

    def inbox(self) -> Inbox:
        return AmqpInbox(self.url)

    def producer_inbox(self) -> Inbox:
        """An inbox on this producer's own connection (see :class:`ProducerInbox`)."""
        return ProducerInbox(self)

    def reply(self, address: str, body: bytes) -> None:
        self.replies([(address, body)])

    def replies(self, replies: list[tuple[str, bytes]]) -> None:
        """Best effort, pipelined, no confirms; failures are logged, not raised. A worker
        sends its batch's replies here, from its own thread, before it acks the batch: no
        hop through the consumer's I/O thread. Replies to the same inbox travel together
        (:func:`~ectool.transport.base.pack_replies`)."""
        if not replies:
            return
        packed = pack_replies(replies, PACK_REPLY_BYTES)

        def send(conn: BlockingConnection) -> None:
            if self._replies is None or not self._replies.is_open:
                self._replies = conn.channel()
            for address, body in packed:
                self._replies._impl.basic_publish("", address, body, REPLY_PROPERTIES)

        try:
            self._unconfirmed("send replies", send)
        except Unreachable as exc:
            log.warning("%d repl%s dropped: %s", len(replies), "y" if len(replies) == 1 else "ies", exc)

    def publish_events(self, exchange: str, events: list[tuple[str, bytes]]) -> None:
        """Pipeline the events without confirms (one flush); Unreachable if that fails."""
        if not events:
            return

        def send(conn: BlockingConnection) -> None:
            if self._events is None or not self._events.is_open:
                self._events, self._exchanges = conn.channel(), set()
            if exchange not in self._exchanges:
                self._events.exchange_declare(exchange, exchange_type="topic", durable=True)
                self._exchanges.add(exchange)
            for key, body in events:
                self._events._impl.basic_publish(exchange, key, body, EVENT_PROPERTIES)

        self._unconfirmed("publish events", send)

    def _unconfirmed(self, what: str, send: Callable[[BlockingConnection], None]) -> None:
        """``send(connection)`` (publishes without confirms, on a channel it keeps), then one
        flush; after a lost connection one more try on a new one, then Unreachable. The
        best-effort channels are forgotten on any failure (they may be in any state)."""
        for attempt in (1, 2):
            try:
                self._check_idle_connection()
                conn = self._connect()
                send(conn)
                conn.process_data_events(0)
                self._last_io = time.monotonic()
                return
            except (px.AMQPError, Unreachable, OSError, ValueError) as exc:
                self._replies = self._events = None
                if isinstance(exc, LOST):
                    self._discard()
                if attempt == 2 or not isinstance(exc, LOST):
                    raise Unreachable(f"cannot {what} on RabbitMQ: {describe(exc)}") from None

    def subscribe_events(self, exchange: str, patterns: list[str] | None = None) -> EventStream:
        return AmqpEventStream(self.url, exchange, patterns)

    def depth(self, queue: str) -> int:
        def operation(channel: BlockingChannel) -> int:
            return channel.queue_declare(queue, passive=True).method.message_count

        return self._retrying(f"counting {queue!r}", lambda: self._on_queue(queue, operation, int))

    def bury(self, queue: str, body: bytes, reason: str) -> None:
        """Straight into the ``ec.dead`` queue (through the default exchange), confirmed,
        with the headers :func:`dead_letter_from` reads."""
        self._retrying("declaring ec.dead", self._admin_channel)  # the dead topology, once
        self.publish(DEAD_QUEUE, [body], headers={"x-ec-reason": reason, "x-ec-queue": queue})

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Read ``ec.dead`` without consuming it: get messages without acking them on a
        channel of its own, then close that channel so they go back in their places."""

        def operation(_admin: BlockingChannel) -> list[DeadLetter]:
            assert self._conn is not None
            channel = self._conn.channel()
            try:
                found: list[DeadLetter] = []
                while len(found) < limit:
                    method, properties, body = channel.basic_get(DEAD_QUEUE, auto_ack=False)
                    if method is None:
                        break
                    found.append(dead_letter_from(properties, body))
                return found
            finally:
                if channel.is_open:
                    channel.close()

        return self._retrying("reading dead letters",
                              lambda: self._on_queue(DEAD_QUEUE, operation, list))

    def purge(self, queue: str) -> int:
        def operation(channel: BlockingChannel) -> int:
            return channel.queue_purge(queue).method.message_count

        return self._retrying(f"purging {queue!r}", lambda: self._on_queue(queue, operation, int))

    def delete_queue(self, queue: str) -> None:
        def operation(channel: BlockingChannel) -> None:
            channel.queue_delete(queue)

        self._retrying(f"deleting {queue!r}",
                       lambda: self._on_queue(queue, operation, lambda: None))

    def close(self) -> None:
        self._discard()
