"""Deliveries that carry several calls: the worker's parts and their settlement.

A message carries one call or a bundle of several (:func:`ectool.messages.bundle`). The
worker handles each call as a :class:`Part` of its delivery. The delivery is settled once,
when every part of it is: acked when each part was recorded, skipped as already final,
dead-lettered or parked on its own; returned to its queue (nacked) when any part was given
back unrun. By then the settled parts are final in the store, so the redelivery skips them
and runs only the rest: a bundle is never acked before every outcome in it is durable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .messages import unbundle
from .transport import Delivery

#: header of a call sent out again on its own from a bundle that came back: its copy is
#: handled as a redelivery (run alone; if already final, its follow-on recovered)
RESENT = "x-ec-resent"


@dataclass(eq=False)
class Part:
    """One call of a delivery. ``whole``: the delivery carries this call alone."""

    delivery: Delivery
    body: bytes
    whole: bool = True

    @property
    def redeliveries(self) -> int:
        d = self.delivery
        return d.redeliveries or (1 if d.headers.get(RESENT) else 0)

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
        done, back = [], []
        for p in parts:
            entry = self._open.get(id(p.delivery))
            if entry is None:
                continue
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
