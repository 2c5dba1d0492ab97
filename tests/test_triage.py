"""Triage of a batch's parts is pure: table-driven tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ectool.worker.triage import (
    ALONE,
    LIMIT,
    PARK,
    RECOVER,
    RUN,
    SETTLE,
    UNKNOWN,
    Next,
    Seen,
    Verdict,
    decide,
    dedupe,
    keep,
    resent,
)

LIMIT_5 = 5


@pytest.mark.parametrize("seen, expected", [
    # claimed here in one statement (first deliveries of queued calls)
    (Seen(1, 0, True, claimed=1), Verdict(RUN, True, 0)),
    (Seen(1, 0, True, claimed=3), Verdict(ALONE, True, 2)),  # two attempts died before: alone
    (Seen(1, 0, True, claimed=6), Verdict(LIMIT, True, 5)),  # its workers died delivery_limit times
    (Seen(1, 0, False, claimed=1), Verdict(UNKNOWN, True, 0)),  # a socket this worker does not serve
    (Seen(2, 0, True, claimed=2), Verdict(RUN, True, 0)),  # a retry's first attempt here
    # final already: never run twice; a redelivered copy recovers the call's flow
    (Seen(1, 0, True, status="done", attempts=1), Verdict(SETTLE)),
    (Seen(1, 1, True, status="failed", attempts=1), Verdict(RECOVER)),
    (Seen(1, 0, False, status="dead", attempts=5), Verdict(SETTLE)),  # final wins over an unknown socket
    # running on another live worker: parked; running on a dead one: run alone
    (Seen(1, 1, True, status="running", attempts=1, elsewhere=True), Verdict(PARK)),
    (Seen(1, 1, True, status="running", attempts=1), Verdict(ALONE, False, 1)),
    (Seen(1, 1, True, status="running", attempts=5), Verdict(LIMIT, False, 5)),
    # not claimed, not final: redelivered, or not in the store yet, runs alone
    (Seen(1, 1, True, status="queued", attempts=0), Verdict(ALONE, False, 0)),
    (Seen(1, 0, True, status=None), Verdict(ALONE, False, 0)),
    (Seen(1, 0, True, status="queued", attempts=0), Verdict(RUN, False, 0)),  # SQLite without RETURNING
    (Seen(2, 0, True, status="retrying", attempts=1), Verdict(RUN, False, 0)),
    (Seen(1, 0, False, status="queued", attempts=0), Verdict(UNKNOWN, False, 0)),
])
def test_decide(seen, expected):
    assert decide(seen, LIMIT_5) == expected


@dataclass
class P:
    name: str
    whole: bool = True
    redeliveries: int = 0


@dataclass
class M:
    id: str
    attempt: int = 1


WHOLE, PART, BACK = P("whole"), P("part", whole=False), P("back", whole=False, redeliveries=1)
WHOLE_BACK = P("whole-back", redeliveries=2)


@pytest.mark.parametrize("parts, spread, expected", [
    ([WHOLE, PART], False, ([], [], [WHOLE, PART])),
    ([WHOLE, PART, BACK], False, ([BACK], [], [WHOLE, PART])),  # a bundle that came back goes out alone
    ([WHOLE, PART, BACK], True, ([BACK], [PART], [WHOLE])),  # spread: every bundled part goes out
    ([WHOLE_BACK], True, ([], [], [WHOLE_BACK])),  # a whole delivery is never resent
])
def test_resent(parts, spread, expected):
    assert resent(parts, spread) == expected


A1, A1_BACK, A2, B1 = P("a1"), P("a1-back", redeliveries=1), P("a2"), P("b1")


@pytest.mark.parametrize("pairs, good, copies", [
    ([(A1, M("a")), (B1, M("b"))], [(A1, M("a")), (B1, M("b"))], []),
    ([(A1, M("a")), (B1, M("b")), (A1_BACK, M("a"))], [(A1_BACK, M("a")), (B1, M("b"))], [A1]),  # redelivered wins
    ([(A1_BACK, M("a")), (A1, M("a"))], [(A1_BACK, M("a"))], [A1]),
    ([(A1_BACK, M("a")), (A2, M("a", 2))], [(A2, M("a", 2))], [A1_BACK]),  # the newer attempt wins
    ([(A2, M("a", 2)), (A1_BACK, M("a"))], [(A2, M("a", 2))], [A1_BACK]),
])
def test_dedupe(pairs, good, copies):
    assert dedupe(pairs) == (good, copies)


@pytest.mark.parametrize("nxt, kept", [
    (Next(served=True, calls=1, recovering=False, stopping=False, held=0.0), True),  # the hand-off
    (Next(served=True, calls=1, recovering=False, stopping=False, held=9.9), True),
    (Next(served=False, calls=1, recovering=False, stopping=False, held=0.0), False),  # another processor's
    (Next(served=True, calls=3, recovering=False, stopping=False, held=0.0), False),  # a parallel step: spread
    (Next(served=True, calls=0, recovering=False, stopping=False, held=0.0), False),  # nothing to run
    (Next(served=True, calls=1, recovering=True, stopping=False, held=0.0), False),  # re-sent, marked redelivered
    (Next(served=True, calls=1, recovering=False, stopping=True, held=0.0), False),  # would be given back
    (Next(served=True, calls=1, recovering=False, stopping=False, held=10.0), False),  # held its delivery long enough
])
def test_keep(nxt, kept):
    assert keep(nxt, keep_for=10.0) is kept
