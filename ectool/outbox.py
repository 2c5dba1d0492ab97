"""What the workflow engine sends, held back until the transaction that decided it commits.

A worker records a batch's outcomes and advances their workflows in one transaction. The
messages that follow (the next pipeline step, a plug's call) and the replies to workflow
callers must not go out before that commit: a message published for a step whose row was
then rolled back, or a caller told of an outcome the store never kept, would break the
guarantees in elasticcode(7). So the engine puts them in an :class:`Outbox`, which the
worker flushes after the commit (a crash in between is covered by redelivery: the member
comes back final and its flow is recovered, which re-sends them).

The outbox also carries the hand-off: when the step that follows is a single call of a
socket this worker serves, the engine may *keep* it (``keep``): its row is written
``running`` here, in the same transaction, and the worker runs it next instead of
publishing it (see :mod:`ectool.worker.batch`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outbox:
    """Sends held back until a commit, and the calls kept to run here."""

    #: may the next step, a single call of this socket, be kept here? (None: never)
    keep: Callable[[str, int], bool] | None = None
    host: str = ""
    pid: int = 0
    ran_at: Any = None  # the (processor, commit, runtime) kept steps run at (provenance)
    sends: list[Callable[[], Any]] = field(default_factory=list)
    kept: list[tuple[Any, Any]] = field(default_factory=list)  # (Target, CallMessage), in order
    #: the workflows' root rows as read with the outcomes (same transaction), used once
    roots: dict[str, Any] | None = None

    def reset(self) -> None:
        """Forget what a rolled-back attempt decided (the store step is tried again)."""
        self.sends, self.kept, self.roots = [], [], None

    def take_roots(self, ids: list[str]) -> dict[str, Any] | None:
        """The root rows read with the outcomes, if they cover ``ids`` (only once: later
        rounds of the engine read what it wrote since)."""
        roots, self.roots = self.roots, None
        return roots if roots is not None and all(i in roots for i in ids) else None

    def add(self, send: Callable[[], Any]) -> None:
        self.sends.append(send)

    def keeps(self, socket: str, calls: int) -> bool:
        """Is the step that starts ``calls`` calls, one of ``socket``, to be kept here?"""
        return self.keep is not None and self.keep(socket, calls)

    def flush(self) -> None:
        """Send what was held back, in order (after the commit)."""
        sends, self.sends = self.sends, []
        for send in sends:
            send()
