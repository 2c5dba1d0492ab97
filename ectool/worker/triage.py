"""What happens to each part of a consumer batch (pure; tests/test_triage.py).

Given what is known of a decoded part (its message, how often it came back, what the
store says of its call), :func:`decide` says: run it with the batch, run it alone (it may
be what killed the last worker, so a crash charges only it), settle it unrun (its outcome
is recorded: never run twice), park it (another live worker is running it), or bury it
(its workers died ``delivery_limit`` times, or its socket is not served here).
:func:`dedupe` keeps one copy of each call and :func:`resent` says which parts of
bundles go out again as messages of their own. :func:`keep` says whether the next step of a
pipeline, started by an outcome this worker records, is run here (the hand-off) or published.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..store.models import FINAL_CALL_STATUS

RUN = "run"  # with the rest of the batch
ALONE = "alone"  # on its own
SETTLE = "settle"  # final already: settled unrun
RECOVER = "recover"  # final already, redelivered: its flow is seen to (a worker may have died first), then settled
PARK = "park"  # running on another live worker: a copy waits in a delay queue
LIMIT = "bury:limit"  # its workers died running it delivery_limit times
UNKNOWN = "bury:socket"  # its socket is not served by this processor


class Seen(NamedTuple):
    """What is known of one decoded part (tuples: one per call, built fast)."""

    attempt: int  # the message's attempt
    redeliveries: int  # how often the broker delivered this message before
    served: bool  # its socket is served by this worker
    claimed: int | None = None  # its attempts if this worker just claimed it, else None
    status: str | None = None  # its call's status in the store (None: not there yet)
    attempts: int = 0  # its call's attempts in the store
    elsewhere: bool = False  # it is running on another live worker


class Verdict(NamedTuple):
    action: str
    claimed: bool = False  # marked running here already (by claim_calls)
    prior: int = 0  # attempts that died before this one


def decide(seen: Seen, delivery_limit: int) -> Verdict:
    """What to do with one part (see the module's docstring)."""
    if seen.claimed is not None:
        prior = seen.claimed - seen.attempt
        return Verdict(_refusal(prior, seen.served, delivery_limit) or (ALONE if prior > 0 else RUN), True, prior)
    if seen.status in FINAL_CALL_STATUS:
        return Verdict(RECOVER if seen.redeliveries > 0 else SETTLE)
    if seen.status == "running" and seen.elsewhere:
        return Verdict(PARK)
    prior = seen.attempts - (seen.attempt - 1) if seen.status is not None else 0
    alone = prior > 0 or seen.redeliveries > 0 or seen.status is None
    return Verdict(_refusal(prior, seen.served, delivery_limit) or (ALONE if alone else RUN), False, prior)


def _refusal(prior: int, served: bool, delivery_limit: int) -> str | None:
    if prior >= delivery_limit:
        return LIMIT
    return None if served else UNKNOWN


def resent(parts: Sequence[Any], spread: bool) -> tuple[list[Any], list[Any], list[Any]]:
    """(redelivered, fresh, kept) of ``parts`` (with ``whole`` and ``redeliveries``): a part
    of a bundle that comes back (its worker died, or handed it back), or any part of a
    bundle when ``spread``, goes out again as a message of its own: each call then counts
    its own deliveries, so a broker's delivery limit can only ever dead-letter the call that
    keeps killing workers, never its bundle with calls that did nothing wrong in it."""
    again = [p for p in parts if not p.whole and (spread or p.redeliveries > 0)]
    redelivered = [p for p in again if p.redeliveries > 0]
    fresh = [p for p in again if p.redeliveries == 0]
    sent = {id(p) for p in again}
    return redelivered, fresh, [p for p in parts if id(p) not in sent]


def dedupe(pairs: Sequence[tuple[Any, Any]]) -> tuple[list[tuple[Any, Any]], list[Any]]:
    """One (part, message) per call id, and the other copies' parts. The newest attempt is
    the one to handle, and of one attempt the redelivered copy (it recovers flows)."""
    good: list[tuple[Any, Any]] = []
    seen: dict[str, int] = {}  # call id -> its index in good
    copies: list[Any] = []
    for d, m in pairs:
        i = seen.get(m.id)
        if i is None:
            seen[m.id] = len(good)
            good.append((d, m))
        elif (m.attempt, d.redeliveries) > (good[i][1].attempt, good[i][0].redeliveries):
            copies.append(good[i][0])
            good[i] = (d, m)
        else:
            copies.append(d)
    return good, copies


#: a chain of kept steps holds its first delivery unacked; past this (seconds) the next
#: step is published instead, so no delivery is held near the broker's ack deadline
KEEP_FOR = 10.0


class Next(NamedTuple):
    """What is known of the step that follows an outcome being recorded here."""

    served: bool  # its socket is served by this worker
    calls: int  # how many calls the step starts (a parallel node starts several)
    recovering: bool  # re-sending after a crash or an ambiguous commit
    stopping: bool  # this worker is stopping
    held: float  # how long the chain it would join has held its first delivery (seconds)


def keep(nxt: Next, keep_for: float = KEEP_FOR) -> bool:
    """Is the next step kept and run by this worker (its row written running here in the
    commit that records the outcome, no message), rather than published? Only a single
    call of a socket served here, on the normal path: never while recovering (the step's
    row may exist, and its message is what recovers it), never while stopping (it would
    have to be given back), and not once the chain has held its delivery ``keep_for``."""
    return (nxt.served and nxt.calls == 1 and not nxt.recovering and not nxt.stopping
            and nxt.held < keep_for)
