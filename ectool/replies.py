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
    def __init__(self, keep: int = KEEP) -> None:
        self.keep_at_most = keep
        self._kept: OrderedDict[str, Outcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, out: Outcome) -> None:
        self._kept[out.id] = out
        while len(self._kept) > self.keep_at_most:
            self._kept.popitem(last=False)

    def take(self, ids: Iterable[str]) -> dict[str, Outcome]:
        """The kept outcomes of ``ids`` (no longer kept)."""
        return {cid: self._kept.pop(cid) for cid in ids if cid in self._kept}


def decode(body: bytes) -> Outcome | None:
    """A reply's outcome; a result too big to travel in a reply is read from the store."""
    from .store.ledger import outcomes

    out = Outcome.decode(body)
    if out is not None and out.result_json is None and out.status == "done":
        out = outcomes([out.id]).get(out.id, out)
    return out
