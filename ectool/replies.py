"""Outcomes from a client's reply inbox, kept until someone waits for them.

Workers send every call's outcome to the inbox named in its message; a client waiting for
some calls (``Client.wait``, ``h.get()`` over many handles) takes what arrives and keeps
the replies of the calls it is not waiting for yet, so a later wait finds them here
without reading the store. The store stays the truth: it is read only for a call whose
reply is missing (a reply lost, or too big to travel), and the kept replies are bounded
(the oldest are dropped: their calls' outcomes are in the store).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from .outcome import Outcome

#: replies kept for calls nobody waits for yet, at most
KEEP = 100_000


class Replies:
    """Kept replies, and the calls whose outcome this client still expects (its pipelined
    calls not yet waited for): when a wait has to read the store for a missing reply, it
    reads theirs too, so a loop of ``h.get()`` whose replies were lost (an inbox that
    overflowed while the loop submitted) reads the store once, not once per handle."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep_at_most = keep
        self._kept: OrderedDict[str, Outcome] = OrderedDict()
        self._expected: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def expect(self, call_id: str) -> None:
        self._expected[call_id] = None
        if len(self._expected) > self.keep_at_most:
            self._expected.popitem(last=False)

    def expected(self, besides: set[str], limit: int) -> list[str]:
        """Up to ``limit`` expected calls not in ``besides``, oldest first."""
        out: list[str] = []
        for cid in self._expected:
            if len(out) >= limit:
                break
            if cid not in besides:
                out.append(cid)
        return out

    def keep(self, out: Outcome) -> None:
        self._expected.pop(out.id, None)
        self._kept[out.id] = out
        while len(self._kept) > self.keep_at_most:
            self._kept.popitem(last=False)

    def take(self, ids: Iterable[str]) -> dict[str, Outcome]:
        """The kept outcomes of ``ids`` (no longer kept)."""
        return {cid: self._kept.pop(cid) for cid in ids if cid in self._kept}

    def settled(self, ids: Iterable[str]) -> None:
        """``ids`` were handed to their waiter: no longer expected."""
        for cid in ids:
            self._expected.pop(cid, None)


def decode(body: bytes) -> Outcome | None:
    """A reply's outcome; a result too big to travel in a reply is read from the store."""
    from .store.ledger import outcomes

    out = Outcome.decode(body)
    if out is not None and out.result_json is None and out.status == "done":
        out = outcomes([out.id]).get(out.id, out)
    return out
