"""Which deliveries a RabbitMQ consumer holds too long, and when to look again (pure: the
clock is passed in).

RabbitMQ closes a channel that holds a delivery unacknowledged past its
``consumer_timeout``; :class:`~ectool.transport.amqp_consumer.AmqpConsumer` hands such a
delivery off (a parked copy, then an ack) once it has held it ``after`` seconds. This
keeps the book of held deliveries for it: when each came, which are overdue, and how long
the I/O thread may wait before the next is due.
"""

from __future__ import annotations

from .base import Delivery


class HandOff:
    """Deliveries held (delivery tag -> (received at, delivery)) by a consumer that hands
    off those held ``after`` seconds; with ``after`` None nothing is ever handed off."""

    def __init__(self, after: float | None) -> None:
        self.after = after
        self.held: dict[int, tuple[float, Delivery]] = {}

    def hold(self, tag: int, delivery: Delivery, now: float) -> None:
        """``delivery`` came at ``now`` (or, after a failed hand-off, is held from now)."""
        if self.after:
            self.held[tag] = (now, delivery)

    def settled(self, tag: int) -> None:
        """Acked, nacked or dead-lettered: no longer held."""
        self.held.pop(tag, None)

    def clear(self) -> None:
        """A new connection: nothing of the old one is held any more."""
        self.held = {}

    def next_wake(self, now: float, poll: float) -> float:
        """Seconds to wait for I/O: at most ``poll``, and no later than the moment the
        oldest held delivery is due (so it is handed off on time, not up to a poll later)."""
        if not self.held or not self.after:
            return poll
        oldest = min(since for since, _ in self.held.values())
        return max(0.0, min(poll, oldest + self.after - now))

    def overdue(self, now: float) -> list[tuple[int, float, Delivery]]:
        """Take out the deliveries held ``after`` seconds or more: (tag, since, delivery)."""
        if not self.held or self.after is None:
            return []
        due = [tag for tag, (since, _) in self.held.items() if now - since >= self.after]
        return [(tag, *self.held.pop(tag)) for tag in due]
