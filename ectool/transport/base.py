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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

DEAD_QUEUE = "ec.dead"


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
    def ack(self, deliveries: list[Delivery], replies: list[tuple[str, bytes]] | None = None) -> None:
        """Acknowledge: the messages are done and will not be delivered again.

        ``replies`` (inbox address, body) are sent first, best-effort, on the consumer's own
        connection: one round trip for a whole batch. An ack may be lost with a connection;
        the message is then redelivered (at-least-once) and recognised as done.
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


class Transport(ABC):
    """A connection to the queueing system. Not shared between threads or processes."""

    url: str
    delivery_limit: int

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
    def consumer(self, queues: list[str], prefetch: int = 1) -> Consumer: ...

    @abstractmethod
    def inbox(self) -> Inbox: ...

    @abstractmethod
    def reply(self, address: str, body: bytes) -> None:
        """Best-effort: send ``body`` to an inbox address; never raises for a gone inbox."""

    @abstractmethod
    def depth(self, queue: str) -> int:
        """Messages waiting (ready, not delivered) in ``queue``."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Messages in the dead-letter queue, oldest first (non-destructive)."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every ready message in ``queue``; returns how many."""

    @abstractmethod
    def delete_queue(self, queue: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
