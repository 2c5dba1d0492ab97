"""Deliveries that carry several calls: the worker's parts and their settlement.

A message carries one call or a bundle of several (:func:`ectool.messages.bundle`). The
worker handles each call as a :class:`Part` of its delivery. The delivery is settled once,
when every part of it is: acked when each part was recorded, skipped as already final,
dead-lettered, parked or sent out again on its own; a whole delivery given back unrun is
returned to its queue (nacked). A bundle is never returned whole (the worker sends the
parts it gives back out again, one to a message): a part of it already recorded, a call
now waiting for its retry say, must not run again. A bundle is never acked before every
call in it has a durable outcome or a durable message of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..messages import unbundle
from ..transport import Delivery


@dataclass(eq=False)
class Part:
    """One call of a delivery. ``whole``: the delivery carries this call alone."""

    delivery: Delivery
    body: bytes
    whole: bool = True
    settled: bool = False  # counted once: settling a part twice must not ack its bundle early

    @property
    def redeliveries(self) -> int:
        return self.delivery.redeliveries

    @property
    def queue(self) -> str:
        return self.delivery.queue


def calls_in(delivery: Delivery) -> int:
    """How many calls a delivery carries (without decoding it)."""
    return delivery.body.count(b"\n") + 1


class Settlement:
    """Which parts of a batch's deliveries are still open; acks or nacks each delivery when
    its last part is settled. One per batch."""

    def __init__(self, consumer) -> None:
        self.consumer = consumer
        self._open: dict[int, list] = {}  # id(delivery) -> [delivery, parts left, given back?]

    def split(self, deliveries: Iterable[Delivery]) -> list[Part]:
        """Every call of ``deliveries`` as a part, in order."""
        parts: list[Part] = []
        for d in deliveries:
            bodies = unbundle(d.body)
            self._open[id(d)] = [d, len(bodies), False]
            parts += [Part(d, body, len(bodies) == 1) for body in bodies]
        return parts

    def settle(self, parts: Iterable[Part], give_back: bool = False) -> None:
        """``parts`` are done with (``give_back``: returned unrun): ack (or, if any part of
        it was given back, nack) each delivery whose parts are now all settled."""
        done: list[Delivery] = []
        back: list[Delivery] = []
        for p in parts:
            entry = self._open.get(id(p.delivery))
            if entry is None or p.settled:
                continue
            p.settled = True
            entry[1] -= 1
            entry[2] = entry[2] or give_back
            if entry[1] <= 0:
                del self._open[id(p.delivery)]
                (back if entry[2] else done).append(entry[0])
        if done:
            self.consumer.ack(done)
        if back:
            self.consumer.nack(back)

    def forget(self, part: Part) -> None:
        """The transport settled ``part``'s whole delivery itself (a dead letter)."""
        self._open.pop(id(part.delivery), None)

    def unsettled(self) -> list[Delivery]:
        return [entry[0] for entry in self._open.values()]
