"""Publisher-confirm bookkeeping for pipelined publishing, and the errors a publish raises.

Pure: no pika connection here, only the confirm frames' classes, so a :class:`Batch` can be
driven by hand in tests.
"""

from __future__ import annotations

from ..pika_lean import import_pika

import_pika()
from pika.spec import Basic

from ..errors import EcError, Unreachable, UsageError


class Batch:
    """Publisher-confirm bookkeeping for one pipelined batch on a confirm channel."""

    def __init__(self, first_seq: int):
        self.first = first_seq  # the channel's publish sequence number of bodies[0]
        self.low = first_seq  # every sequence number below this one is settled
        self.pending: set[int] = set()
        self.sent = 0
        self.nacked = 0
        self.nacked_tags: list[int] = []
        self.returned: list[bytes] = []  # bodies that came back unroutable (not enqueued)

    def on_confirm(self, method: Basic.Ack | Basic.Nack) -> None:
        tag = method.delivery_tag
        if method.multiple:
            tags: range | tuple[int, ...] = range(self.low, tag + 1)
            self.low = max(self.low, tag + 1)
        else:
            tags = (tag,)
        nack = isinstance(method, Basic.Nack)
        for t in tags:
            if t in self.pending:
                self.pending.remove(t)
                self.nacked += nack
                if nack:
                    self.nacked_tags.append(t)

    def unconfirmed(self, bodies: list[bytes]) -> list[bytes]:
        """The bodies that are not known to be durable, in their original order."""
        return [bodies[t - self.first] for t in sorted(self.pending)] + bodies[self.sent:]

    def refused(self, bodies: list[bytes]) -> list[bytes]:
        """The bodies the broker nacked (not made durable), in their original order."""
        return [bodies[t - self.first] for t in sorted(self.nacked_tags)]


class Refused(Exception):
    """Some messages of a batch were nacked; they are sent again (see Producer.publish)."""


class HomeNodeDown(EcError):
    """A classic queue's node (its only copy) is down; a cluster's other nodes answer 404."""

    exit_code = Unreachable.exit_code


class QueueMissing(UsageError):
    """Messages came back unroutable: ``queue`` does not exist. ``returned`` are those
    bodies (not enqueued); the rest of the batch is durable. A caller that may create the
    queue declares it and publishes ``returned`` again."""

    def __init__(self, queue: str, returned: list[bytes]):
        super().__init__(f"queue {queue!r} does not exist (declare it first)")
        self.queue = queue
        self.returned = returned
