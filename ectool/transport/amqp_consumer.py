"""The receiving side of the RabbitMQ transport: consumers and inboxes.

A consumer has an I/O thread that owns its connection (pika is not thread-safe).

The I/O thread keeps the connection alive (heartbeats flow while the application thread
runs a long task), puts deliveries into a local buffer that :meth:`AmqpConsumer.get` reads,
and carries out acks, nacks and dead-lettering that other threads hand it as commands;
those calls block until the command has been sent.

Each connection is a *generation*; a delivery's tag is ``(generation, delivery tag)``. When
the connection drops, the thread reconnects with backoff (until closed), deliveries of the
old generation still in the buffer are discarded and acks for them are dropped: the broker
delivers those messages again (at least once).

RabbitMQ closes a channel that holds a delivery unacknowledged longer than its
``consumer_timeout`` (30 minutes by default), which would hand a long call to another
worker while it still runs. So a delivery held longer than ``hand_off_after`` seconds is
*handed off*: a copy is published (with a publisher confirm) to the socket's delay queue,
then the delivery is acknowledged. The copy comes back after the delay; a worker finding
the call still running on a live worker parks it again, one finding it final drops it
(see :mod:`ectool.worker`). The application's later ack of a handed-off delivery is a
no-op; its nack publishes the copy back at once. Durability never depends on the ack: at
every moment the broker holds the delivery or a confirmed copy of it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..pika_lean import import_pika

import_pika()
from pika import exceptions as px
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from ..errors import EcError, Unreachable, UsageError
from .amqp_connection import (
    DELAY_ALTERNATES,
    LOST,
    NOT_FOUND,
    declare_dead_topology,
    delay_queue,
    describe,
    open_connection,
    redact,
)
from .base import (
    DEAD_QUEUE,
    REDELIVERED,
    Consumer,
    Delivery,
    reported_redeliveries,
)
from .hand_off import HandOff

log = logging.getLogger(__name__)

RECONNECT_MIN, RECONNECT_MAX = 0.5, 30.0  # backoff between reconnect attempts (seconds)
POLL = 1.0  # the I/O thread wakes at least this often (heartbeats, the stop flag)
PARK_MAX = 30.0  # a handed-off delivery's copy comes back after at most this many seconds
PARKED = "x-ec-parked"  # header marking a handed-off or parked copy

Command = Callable[[], Any]


class AmqpConsumer(Consumer):
    """Consumes ``queues`` with manual acks, at most ``prefetch`` unacked per queue."""

    def __init__(self, url: str, queues: list[str], prefetch: int = 1, *,
                 hand_off_after: float | None = None):
        if not queues:
            raise UsageError("a consumer needs at least one queue")
        self._url = url
        self._queues = queues
        self._prefetch = max(1, int(prefetch))
        self._buffer: queue.Queue[Delivery] = queue.Queue()
        self._commands: queue.Queue[tuple[Command, Future]] = queue.Queue()
        self._stop = threading.Event()
        self._closed = False
        self._generation = 0
        # owned by the I/O thread:
        # None only while disconnected; the methods using them run while connected
        self._conn: BlockingConnection = None  # type: ignore[assignment]
        self._channel: BlockingChannel = None  # type: ignore[assignment]
        self._dead_channel: BlockingChannel = None  # type: ignore[assignment]  # confirm mode
        self._consumer_queues: dict[str, str] = {}  # consumer tag -> queue
        self._cancelled = False  # the broker cancelled a consumer
        self._unacked: set[int] = set()  # delivery tags of the current generation
        self._held = HandOff(hand_off_after)  # unacked deliveries, by when they came
        self._handed: dict[int, Delivery] = {}  # acked early; a confirmed copy is parked
        self._started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="ec-amqp-consumer", daemon=True)
        self._thread.start()
        self._started.result()  # Unreachable / UsageError from the first connection

    # -- application side ----------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Delivery | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            wait = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            try:
                delivery = self._buffer.get(timeout=wait) if wait > 0 else self._buffer.get_nowait()
            except queue.Empty:
                if not self._thread.is_alive():
                    raise Unreachable("the consumer's connection thread has stopped") from None
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            if delivery.tag[0] == self._generation:
                return delivery
            # from a lost connection: the broker delivers it again
        return None

    def ack(self, deliveries: list[Delivery]) -> None:
        self._settle(deliveries, requeue=None, wait=False)

    def nack(self, deliveries: list[Delivery]) -> None:
        self._settle(deliveries, requeue=True)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        generation, tag = delivery.tag
        if generation == self._generation:
            self._call(lambda: self._do_dead_letter(generation, tag, delivery, reason))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        self._thread.join(timeout=15)

    def _settle(self, deliveries: list[Delivery], requeue: bool | None, wait: bool = True) -> None:
        tags = [d.tag[1] for d in deliveries if d.tag[0] == self._generation]
        if tags:
            generation = self._generation
            self._call(lambda: self._do_settle(generation, tags, requeue), wait=wait)

    def _call(self, command: Command, wait: bool = True) -> Any:
        """Run ``command`` on the I/O thread and (unless not ``wait``) wait for it; a no-op
        once closed."""
        if self._closed or not self._thread.is_alive():
            return None
        future: Future[Any] = Future()
        self._commands.put((command, future))
        self._wake()
        if not wait:
            return None
        while True:
            try:
                return future.result(timeout=POLL)
            except TimeoutError:
                if not self._thread.is_alive():
                    self._drain_commands()
                    return None

    def _wake(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: None)
            except (px.AMQPError, OSError):  # closed: the thread notices by itself
                pass

    # -- I/O thread ----------------------------------------------------------------------

    def _run(self) -> None:
        pause = RECONNECT_MIN
        try:
            while not self._stop.is_set():
                try:
                    self._open()
                except (EcError, px.AMQPError, OSError) as exc:
                    self._discard()
                    if not self._started.done():
                        self._started.set_exception(_translate(exc, self._url))
                        return
                    log.warning("consumer cannot reconnect (%s); retrying in %.1fs",
                                describe(exc), pause)
                    self._idle(pause)
                    pause = min(pause * 2, RECONNECT_MAX)
                    continue
                if not self._started.done():
                    self._started.set_result(None)
                pause = RECONNECT_MIN
                try:
                    self._serve()
                except (px.AMQPError, OSError) as exc:
                    if not self._stop.is_set():
                        log.warning("consumer lost RabbitMQ (%s); reconnecting", describe(exc))
                    self._discard()
            self._shutdown()
        except Exception as exc:
            log.exception("the consumer's I/O thread failed")
            if not self._started.done():
                self._started.set_exception(_translate(exc, self._url))
        finally:
            self._drain_commands()

    def _open(self) -> None:
        """Connect, then consume every queue: a new generation."""
        self._generation += 1
        self._unacked = set()
        self._held.clear()
        self._handed = {}
        self._conn = conn = open_connection(self._url, "consumer")
        declare_dead_topology(conn)
        self._dead_channel = conn.channel()
        self._dead_channel.confirm_delivery()
        self._channel = channel = conn.channel()
        channel.basic_qos(prefetch_count=self._prefetch)
        channel.add_on_cancel_callback(self._on_cancelled)
        self._cancelled = False
        self._consumer_queues = {}
        for name in self._queues:
            def on_message(_ch: Any, method: Any, properties: BasicProperties, body: bytes,
                           name: str = name) -> None:
                delivery = delivery_from(name, method, properties, body, self._generation)
                self._unacked.add(method.delivery_tag)
                self._held.hold(method.delivery_tag, delivery, time.monotonic())
                self._buffer.put(delivery)

            try:
                tag = channel.basic_consume(name, on_message)
            except px.ChannelClosedByBroker as exc:
                if exc.reply_code == NOT_FOUND:
                    raise UsageError(f"queue {name!r} does not exist") from None
                raise
            self._consumer_queues[tag] = name

    def _on_cancelled(self, method: Any) -> None:
        queue_name = self._consumer_queues.get(method.method.consumer_tag, "?")
        log.warning("RabbitMQ cancelled the consumer of %s (queue deleted?)", queue_name)
        self._cancelled = True

    def _serve(self) -> None:
        """Pump I/O and run commands until stopped or the connection is lost."""
        assert self._conn is not None and self._channel is not None
        while not self._stop.is_set():
            self._conn.process_data_events(time_limit=self._held.next_wake(time.monotonic(), POLL))
            self._run_commands()
            self._hand_off_overdue()
            if not self._channel.is_open or self._cancelled:
                # closed by a channel error, or a queue deleted under us: start over
                raise px.ChannelWrongStateError("the consumer's channel was closed or cancelled")

    def _run_commands(self) -> None:
        while True:
            try:
                command, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(command())
            except LOST:
                future.set_result(None)  # not sent; the broker delivers the message again
                raise
            except px.AMQPError as exc:
                future.set_exception(EcError(f"RabbitMQ refused: {describe(exc)}"))
            except Exception as exc:  # noqa: BLE001 - handed to the calling thread
                future.set_exception(exc)

    def _idle(self, seconds: float) -> None:
        """Wait between reconnect attempts, still answering commands (as no-ops)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                command, future = self._commands.get(timeout=min(left, POLL))
            except queue.Empty:
                continue
            future.set_result(None)  # nothing to ack on a lost connection

    def _drain_commands(self) -> None:
        while True:
            try:
                _command, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.done():
                future.set_result(None)

    def _discard(self) -> None:
        """Forget a lost connection; deliveries from it are stale from now on."""
        self._generation += 1
        conn, self._conn = self._conn, None
        self._channel = self._dead_channel = None
        self._unacked = set()
        self._held.clear()
        self._handed = {}
        _drain(self._buffer)
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except (px.AMQPError, OSError):
                pass

    def _shutdown(self) -> None:
        """Cancel the consumers, return every unacked delivery, close the connection."""
        channel, conn = self._channel, self._conn
        if channel is not None and channel.is_open:
            try:
                for tag in list(self._consumer_queues):
                    channel.basic_cancel(tag)
                self._run_commands()
                # multiple=True from tag 0: every unacked delivery, buffered or handed out
                channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
            except (px.AMQPError, OSError) as exc:
                log.debug("consumer shutdown: %s", describe(exc))
        self._channel = None
        self._discard()
        if conn is not None and conn.is_open:  # _discard closed it already, normally
            conn.close()

    def _do_settle(self, generation: int, tags: list[int], requeue: bool | None) -> None:
        channel = self._channel
        if generation != self._generation or channel is None:
            return
        for tag in set(tags) & self._handed.keys():
            delivery = self._handed.pop(tag)
            if requeue:  # handed back: the copy goes back to its queue now, not after the delay
                self._park(delivery, 0.0)
        tags = sorted(set(tags) & self._unacked)
        for tag in tags:
            self._held.settled(tag)
        if not tags:
            return
        top = tags[-1]
        chosen = set(tags)
        # multiple=True settles every unacked tag <= top: only if all of them are ours
        multiple = len(tags) > 1 and all(t in chosen for t in self._unacked if t <= top)
        for tag in [top] if multiple else tags:
            if requeue is None:
                channel.basic_ack(delivery_tag=tag, multiple=multiple)
            else:
                channel.basic_nack(delivery_tag=tag, multiple=multiple, requeue=requeue)
        self._unacked -= chosen

    def _do_dead_letter(self, generation: int, tag: int, delivery: Delivery, reason: str) -> None:
        channel = self._dead_channel
        if generation != self._generation or channel is None or (
                tag not in self._unacked and tag not in self._handed):
            return
        headers = {k: v for k, v in delivery.headers.items() if k != "x-delivery-count"}
        headers |= {"x-ec-reason": reason, "x-ec-queue": delivery.queue}
        try:
            channel.basic_publish(DEAD_QUEUE, "", delivery.body,
                                  BasicProperties(delivery_mode=2, headers=headers),
                                  mandatory=True)
        except (px.UnroutableError, px.NackError) as exc:
            raise EcError(f"RabbitMQ did not take the dead letter: {type(exc).__name__}") from None
        self._do_settle(generation, [tag], requeue=None)

    def _hand_off_overdue(self) -> None:
        """Hand off every delivery held longer than ``hand_off_after`` (see the module doc)."""
        now = time.monotonic()
        for tag, since, delivery in self._held.overdue(now):
            if tag not in self._unacked:
                continue
            try:
                self._park(delivery, min(PARK_MAX, self._held.after or 0.0))
            except EcError as exc:  # not parked: keep holding it, try again later
                log.warning("cannot hand off a delivery from %s: %s", delivery.queue, exc)
                self._held.hold(tag, delivery, now)
                continue
            self._channel.basic_ack(delivery_tag=tag)
            self._unacked.discard(tag)
            self._handed[tag] = delivery
            log.info("handed off a delivery from %s held %.0fs (copy parked, delivery acked)",
                     delivery.queue, now - since)

    def _park(self, delivery: Delivery, delay: float) -> None:
        """Publish a confirmed copy of ``delivery`` to its queue, after ``delay`` seconds."""
        target = delivery.queue
        if delay > 0:
            target = self._declare_delay(*delay_queue(delivery.queue, delay))
        channel = self._dead_channel
        assert channel is not None
        headers = {k: v for k, v in delivery.headers.items() if not k.startswith("x-")} | {PARKED: 1}
        if delivery.redeliveries > 0:
            headers[REDELIVERED] = 1
        try:
            channel.basic_publish("", target, delivery.body, BasicProperties(delivery_mode=2, headers=headers),
                                  mandatory=True)
        except (px.UnroutableError, px.NackError) as exc:
            raise EcError(f"RabbitMQ did not take a parked copy for {delivery.queue!r}: "
                          f"{type(exc).__name__}") from None


    def _declare_delay(self, name: str, arguments: dict[str, Any]) -> str:
        """Declare the delay queue ``name`` on the confirm channel; while its node is down
        (a cluster answers 404, home node down) an alternate ``NAME.1``, ``NAME.2``, ...
        as the producer side does. EcError (the channel reopened) if none will do."""
        for alternate in range(DELAY_ALTERNATES + 1):
            target = f"{name}.{alternate}" if alternate else name
            try:
                self._dead_channel.queue_declare(target, durable=True, arguments=arguments)
                return target
            except px.ChannelClosedByBroker as exc:
                self._dead_channel = self._conn.channel()  # the error closed it
                self._dead_channel.confirm_delivery()
                if exc.reply_code != NOT_FOUND or "home node" not in (exc.reply_text or ""):
                    raise EcError(f"cannot declare {target}: {describe(exc)}") from None
                log.info("%s is on a RabbitMQ node that is down; trying an alternate", target)
        raise EcError(f"no delay queue {name} is on a running RabbitMQ node")


def delivery_from(queue: str, method: Basic.Deliver, properties: BasicProperties,
                  body: bytes, generation: int) -> Delivery:
    """A :class:`Delivery` whose tag is ``(connection generation, delivery tag)``.

    Quorum queues count returns in ``x-delivery-count``; classic queues only say whether
    the message was delivered before (counted as one redelivery).
    """
    headers = dict(properties.headers or {})
    count = headers.get("x-delivery-count")
    redeliveries = int(count) if count is not None else int(bool(method.redelivered))
    return Delivery(body=body, queue=queue, tag=(generation, method.delivery_tag),
                    redeliveries=reported_redeliveries(redeliveries, headers), headers=headers)


def _drain(buffer: queue.Queue[Any]) -> None:
    while True:
        try:
            buffer.get_nowait()
        except queue.Empty:
            return


def _translate(error: BaseException, url: str) -> EcError:
    if isinstance(error, EcError):
        return error
    return Unreachable(f"cannot consume from RabbitMQ at {redact(url)}: {describe(error)}")
