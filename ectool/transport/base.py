"""The transport interface: durable queues with at-least-once delivery.

Two implementations exist, ``amqp://`` (RabbitMQ via pika) and ``sqlite://`` (embedded),
and one conformance suite (``tests/test_transport_conformance.py``) defines "the same
behaviour". The contract:

* :meth:`Transport.publish` returns only once the message is durable (publisher confirm,
  committed row). ``delay`` makes the message available later without anyone holding it.
* A :class:`Consumer` receives :class:`Delivery` objects; each must be acked, nacked or
  dead-lettered. A delivery that is neither when its consumer dies (process killed,
  connection lost) is delivered again, with :attr:`Delivery.redeliveries` one higher.
* A message returned more than ``delivery_limit`` times is moved to the dead-letter queue
  (``ec.dead``) with a reason instead of being delivered again.
* Replies are best-effort notifications to an :class:`Inbox` (the store holds the truth).
* Events are best-effort, non-durable broadcasts on a named *exchange* with a routing key
  (the event kind); every :class:`EventStream` subscribed with a matching pattern gets a
  copy of each event published after it opened (AMQP topic patterns: ``*`` is one word,
  ``#`` zero or more).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

DEAD_QUEUE = "ec.dead"
#: header of a copy that stands for a redelivery (a call sent out again from a bundle that
#: came back, a parked or handed-off copy of a redelivered call): its delivery reports at
#: least one redelivery, so a worker handles it as one (runs it alone, and if it is already
#: final, makes sure its flow moved on)
REDELIVERED = "x-ec-redelivered"


def reported_redeliveries(count: int, headers: dict[str, Any]) -> int:
    """What a delivery reports as its redeliveries: the broker's count, at least 1 for a
    copy marked :data:`REDELIVERED`."""
    return max(count, 1) if headers.get(REDELIVERED) else count


def join_lines(bodies: list[bytes], max_bytes: int | None, max_count: int | None = None) -> list[bytes]:
    """``bodies`` (compact JSON, never a raw newline in one) joined by newlines into as few
    messages as fit ``max_bytes`` and ``max_count`` each, in order; a body larger than
    ``max_bytes`` alone is a message of its own. Replies and bundled calls travel so."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    used = 0
    for body in bodies:
        if chunk and ((max_count is not None and len(chunk) >= max_count)
                      or (max_bytes is not None and used + len(body) + 1 > max_bytes)):
            out.append(b"\n".join(chunk))
            chunk, used = [], 0
        chunk.append(body)
        used += len(body) + 1
    if chunk:
        out.append(b"\n".join(chunk))
    return out


def pack_replies(replies: list[tuple[str, bytes]], limit: int) -> list[tuple[str, bytes]]:
    """Replies to the same inbox joined into few messages (newline-separated bodies, each
    message at most ``limit`` bytes unless one body alone is larger), in their order per
    inbox. A reply body is compact JSON, which never holds a raw newline; an inbox splits
    what it receives with :func:`unpack_replies`. One message per inbox and worker batch
    instead of one per call: under load most of a reply's cost is per message."""
    by_address: dict[str, list[bytes]] = {}
    for address, body in replies:
        by_address.setdefault(address, []).append(body)
    return [(address, message) for address, bodies in by_address.items()
            for message in join_lines(bodies, limit)]


def unpack_replies(message: bytes) -> list[bytes]:
    """The reply bodies in one inbox message (see :func:`pack_replies`)."""
    return [b for b in message.split(b"\n") if b] if b"\n" in message else [message]


@dataclass
class Delivery:
    """One delivery of a message. ``tag`` is transport-private."""

    body: bytes
    queue: str
    tag: Any
    redeliveries: int = 0
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeadLetter:
    """A message in the dead-letter queue and why it is there."""

    body: bytes
    queue: str
    reason: str
    headers: dict[str, Any] = field(default_factory=dict)


class Consumer(ABC):
    """Receives deliveries from one or more queues, at most ``prefetch`` unacked at a time."""

    @abstractmethod
    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, waiting up to ``timeout`` seconds (None: forever, 0: no wait)."""

    @abstractmethod
    def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge: the messages are done and will not be delivered again.

        An ack may be lost with a connection; the message is then redelivered
        (at-least-once) and recognised as done.
        """

    @abstractmethod
    def nack(self, deliveries: list[Delivery]) -> None:
        """Return unstarted messages to their queue at once, for another consumer."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to ``ec.dead`` with ``reason`` (durably), then ack it."""

    @abstractmethod
    def close(self) -> None:
        """Stop consuming; unacked deliveries go back to their queues."""


class Inbox(ABC):
    """A private address that receives reply notifications."""

    address: str

    @abstractmethod
    def get(self, timeout: float | None = None) -> bytes | None:
        """The next reply body, or None after ``timeout`` seconds."""

    @abstractmethod
    def close(self) -> None: ...


class EventStream(ABC):
    """A subscription to events: bodies of events published after it opened."""

    @abstractmethod
    def get(self, timeout: float | None = None) -> bytes | None:
        """The next event body, or None after ``timeout`` seconds."""

    @abstractmethod
    def close(self) -> None: ...


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` matches one dot-separated word, ``#`` zero or more."""
    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


class Transport(ABC):
    """A connection to the queueing system. Not shared between threads or processes."""

    url: str
    delivery_limit: int

    # Capabilities, with the defaults of a transport that has none of them:
    #: publish hands messages for a missing queue back (UsageError with ``returned``)
    #: instead of dropping them, so a publisher may declare queues only on a miss
    returns_unroutable: bool = False
    #: the largest reply the transport carries; a worker leaves the payload of a bigger
    #: one out (the store has it). None: no limit
    max_reply_bytes: int | None = None
    #: a short-lived client can publish, receive replies (:meth:`producer_inbox`) and send
    #: its events on the one connection
    single_connection: bool = False

    @abstractmethod
    def declare(self, queue: str, *, kind: str = "quorum", max_length: int | None = None) -> None:
        """Create ``queue`` durably if it does not exist (idempotent)."""

    @abstractmethod
    def publish(self, queue: str, bodies: list[bytes], *, delay: float = 0.0,
                headers: dict[str, Any] | None = None) -> None:
        """Durably enqueue ``bodies`` (in order) on ``queue``; returns once all are durable.

        Raises :class:`~ectool.errors.Unreachable` if that cannot be confirmed and
        :class:`~ectool.errors.UsageError` if the queue does not exist.
        """

    @abstractmethod
    def consumer(self, queues: list[str], prefetch: int = 1, *, hand_off_after: float | None = None) -> Consumer:
        """Consume ``queues`` with at most ``prefetch`` unsettled deliveries.

        ``hand_off_after``: a delivery held unsettled this many seconds is handed off where
        the broker would otherwise take it back (RabbitMQ's consumer timeout): a confirmed
        copy is parked in a delay queue and the delivery acknowledged; settling it later is
        then a no-op (ack) or sends the copy back at once (nack). The SQLite transport's
        leases never time out, so it ignores this."""

    @abstractmethod
    def inbox(self) -> Inbox: ...

    def producer_inbox(self) -> Inbox:
        """An inbox on the connection that publishes (see :attr:`single_connection`);
        where the transport has no such thing, an ordinary :meth:`inbox`."""
        return self.inbox()

    @abstractmethod
    def reply(self, address: str, body: bytes) -> None:
        """Best-effort: send ``body`` to an inbox address; never raises for a gone inbox."""

    def replies(self, replies: list[tuple[str, bytes]]) -> None:
        """Best-effort: :meth:`reply` for each (address, body) of a batch, sent together
        where the transport can (a worker sends its batch's replies, then acks it)."""
        for address, body in replies:
            self.reply(address, body)

    @abstractmethod
    def depth(self, queue: str) -> int:
        """Messages waiting (ready, not delivered) in ``queue``."""

    @abstractmethod
    def bury(self, queue: str, body: bytes, reason: str) -> None:
        """Put ``body`` into the dead-letter queue (durably), as dead-lettered from
        ``queue`` for ``reason``: one call of a bundle whose other calls go on."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Messages in the dead-letter queue, oldest first (non-destructive)."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every ready message in ``queue``; returns how many."""

    @abstractmethod
    def delete_queue(self, queue: str) -> None: ...

    @abstractmethod
    def publish_events(self, exchange: str, events: list[tuple[str, bytes]]) -> None:
        """Broadcast ``(routing key, body)`` events on ``exchange``, best-effort and not
        durable: no confirm is awaited. Raises :class:`~ectool.errors.EcError` if the
        transport cannot take them now (the caller counts them as dropped)."""

    @abstractmethod
    def subscribe_events(self, exchange: str, patterns: list[str] | None = None) -> EventStream:
        """Receive events published on ``exchange`` from now on whose routing key matches
        one of ``patterns`` (all events when None)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
