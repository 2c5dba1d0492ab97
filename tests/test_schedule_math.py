"""The pure schedule math: cron fields, DST and time zones, intervals, catch-up."""

import datetime as dt

import pytest

from ectool.errors import UsageError
from ectool.schedule_math import Spec, decide, next_interval, parse_cron, zone

D = dt.datetime


@pytest.mark.parametrize("expr, tz, after, expected", [
    # plain UTC
    ("*/15 * * * *", "UTC", D(2026, 1, 1, 10, 7), [D(2026, 1, 1, 10, 15), D(2026, 1, 1, 10, 30)]),
    ("0 9 * * mon-fri", "UTC", D(2026, 1, 2, 10, 0), [D(2026, 1, 5, 9, 0), D(2026, 1, 6, 9, 0)]),
    ("@monthly", "UTC", D(2026, 1, 15), [D(2026, 2, 1), D(2026, 3, 1)]),
    # both day fields restricted: either matches (1st of the month or a Sunday)
    ("0 0 1 * sun", "UTC", D(2026, 2, 26), [D(2026, 3, 1), D(2026, 3, 8)]),
    # a zone without DST: 09:00 Tokyo is 00:00 UTC
    ("0 9 * * *", "Asia/Tokyo", D(2026, 6, 1, 1), [D(2026, 6, 2, 0), D(2026, 6, 3, 0)]),
    # Berlin spring forward (2026-03-29 02:00 -> 03:00): 02:30 is skipped, fires at 03:00 local
    ("30 2 * * *", "Europe/Berlin", D(2026, 3, 28, 12),
     [D(2026, 3, 29, 1, 0), D(2026, 3, 30, 0, 30)]),
    # daily 09:00 Berlin keeps its wall time across the change (08:00 UTC, then 07:00 UTC)
    ("0 9 * * *", "Europe/Berlin", D(2026, 3, 28, 9), [D(2026, 3, 29, 7), D(2026, 3, 30, 7)]),
    # Berlin fall back (2026-10-25 03:00 -> 02:00): 02:30 happens twice, fires once (the first)
    ("30 2 * * *", "Europe/Berlin", D(2026, 10, 24, 12), [D(2026, 10, 25, 0, 30), D(2026, 10, 26, 1, 30)]),
    # every 30 minutes through the repeated hour: 02:00 and 02:30 once each
    ("*/30 2-3 25 10 *", "Europe/Berlin", D(2026, 10, 24, 23),
     [D(2026, 10, 25, 0, 0), D(2026, 10, 25, 0, 30), D(2026, 10, 25, 2, 0), D(2026, 10, 25, 2, 30)]),
    # New York spring forward (2026-03-08 02:00 EST -> 03:00 EDT): 02:15 fires at 03:00 EDT
    ("15 2 * * *", "America/New_York", D(2026, 3, 7, 12), [D(2026, 3, 8, 7, 0), D(2026, 3, 9, 6, 15)]),
])
def test_cron_fire_times(expr, tz, after, expected):
    spec = Spec(cron=parse_cron(expr), tz=zone(tz))
    assert spec.upcoming(after, len(expected)) == expected


@pytest.mark.parametrize("expr", ["", "* * * *", "61 * * * *", "* 24 * * *", "*/0 * * * *", "5-1 * * * *",
                                  "* * * foo *", "a b c d e", "* * 0 * *"])
def test_invalid_cron(expr):
    with pytest.raises(UsageError):
        parse_cron(expr)


def test_unknown_zone():
    with pytest.raises(UsageError, match="unknown time zone"):
        zone("Mars/Olympus")


def test_no_such_date():
    assert Spec(cron=parse_cron("0 0 30 2 *")).next(D(2026, 1, 1)) is None


@pytest.mark.parametrize("anchor, every, after, expected", [
    (D(2026, 1, 1), 10, D(2026, 1, 1, 0, 0, 5), D(2026, 1, 1, 0, 0, 10)),
    (D(2026, 1, 1), 10, D(2026, 1, 1, 0, 0, 10), D(2026, 1, 1, 0, 0, 20)),
    (D(2026, 1, 1), 0.5, D(2026, 1, 1, 0, 0, 1, 200000), D(2026, 1, 1, 0, 0, 1, 500000)),
    (D(2026, 1, 1), 60, D(2025, 12, 31), D(2026, 1, 1)),
])
def test_interval(anchor, every, after, expected):
    assert next_interval(anchor, every, after) == expected


T0 = D(2026, 1, 1)
SEC = Spec(every=1, anchor=T0)


def ticks(a, b):
    return [T0 + dt.timedelta(seconds=s) for s in range(a, b)]


@pytest.mark.parametrize("policy, now_s, fire, missed, next_s", [
    # on time: ticks within the grace (5 s) always fire
    ("skip", 3, ticks(0, 4), [], 4),
    ("one", 3, ticks(0, 4), [], 4),
    # the agents were down 20 s: ticks 0..14 are late, 15..20 on time
    ("all", 20, ticks(0, 21), [], 21),
    ("skip", 20, ticks(15, 21), ticks(0, 15), 21),
    ("one", 20, [T0 + dt.timedelta(seconds=14), *ticks(15, 21)], ticks(0, 14), 21),
    # nothing due yet
    ("all", -1, [], [], 0),
])
def test_catch_up(policy, now_s, fire, missed, next_s):
    d = decide(SEC, T0, T0 + dt.timedelta(seconds=now_s), policy)
    assert (d.fire, d.missed, d.next_tick) == (fire, missed, T0 + dt.timedelta(seconds=next_s))


def test_jitter_delays_a_tick_the_same_for_everyone():
    a = decide(Spec(every=60, anchor=T0), T0, T0 + dt.timedelta(seconds=1), "all", key="s", jitter=30)
    b = decide(Spec(every=60, anchor=T0), T0, T0 + dt.timedelta(seconds=30), "all", key="s", jitter=30)
    assert a.fire in ([], [T0]) and b.fire == [T0]
