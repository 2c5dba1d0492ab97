"""Schedule math, pure: interval ticks, five-field cron in a time zone, catch-up decisions.

All instants are naive UTC datetimes (as the store keeps them). Cron fields are matched on
the zone's wall clock, with these rules on DST changes (those of Vixie cron and cronie):

- a wall time the clock skips (spring forward, 02:30 in Europe/Berlin on the last Sunday of
  March) fires once, at the first instant after the gap (03:00 local);
- a wall time the clock shows twice (fall back) fires once, at its first occurrence.

No parser library: the five fields are a small grammar, and the DST rules above are the
part a library gets subtly wrong, so they are written out here and table-tested.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import UsageError

UTC = dt.UTC
CATCH_UP = ("skip", "one", "all")
#: a tick fired later than its grace after its time (plus its jitter) counts as missed: the
#: catch-up policy decides whether it fires. Unless a schedule sets its own (``--grace``),
#: the grace is a tenth of the gap to the next tick, at least GRACE and at most GRACE_MAX
#: (every 1 s or 30 s: 5 s; hourly: 6 min; daily: 1 h), so an agent restart never makes a
#: nightly job "missed" while a fast schedule still tells late from on time.
GRACE = dt.timedelta(seconds=5)
GRACE_MAX = dt.timedelta(hours=1)
GRACE_SHARE = 0.1
#: at most this many ticks are handled per schedule per round (a long downtime under
#: ``all`` catches up over several rounds)
BATCH = 500

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
#: (name, low, high, names)
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
          ("month", 1, 12, MONTHS), ("day of week", 0, 7, DAYS))


def zone(name: str) -> ZoneInfo:
    """The time zone ``name`` (UsageError if unknown)."""
    try:
        if not name or "\x00" in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin or UTC)") from None


def _value(text: str, low: int, high: int, names: dict, what: str) -> int:
    v = names.get(text.lower()) if names else None
    if v is None:
        if not text.isdigit():
            raise UsageError(f"invalid cron {what} {text!r}")
        v = int(text)
    if not low <= v <= high:
        raise UsageError(f"cron {what} {v} out of range {low}-{high}")
    return v


def _field(text: str, low: int, high: int, names: dict, what: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise UsageError(f"invalid cron step {part!r} in the {what} field")
            step = int(step_text)
        if rng == "*":
            a, b = low, high
        elif "-" in rng:
            a_text, b_text = rng.split("-", 1)
            a, b = _value(a_text, low, high, names, what), _value(b_text, low, high, names, what)
            if a > b:
                raise UsageError(f"invalid cron range {rng!r} in the {what} field")
        else:
            a = _value(rng, low, high, names, what)
            b = high if step_text else a
        out.update(range(a, b + 1, step))
    return frozenset(out)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is *
    any_weekday: bool

    def day_matches(self, d: dt.date) -> bool:
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # one restricted: that one; both *: every day
            return dom and dow
        return dom or dow  # both restricted: either (cron's rule)


def parse_cron(expr: str) -> Cron:
    """A five-field cron expression (or @hourly, @daily, ...); UsageError if invalid."""
    text = MACROS.get(expr.strip().lower(), expr.strip())
    parts = text.split()
    if len(parts) != 5:
        raise UsageError(f"invalid cron expression {expr!r}: expected 5 fields "
                         f"(minute hour day-of-month month day-of-week), got {len(parts)}")
    sets = [_field(p, lo, hi, names, what) for p, (what, lo, hi, names) in zip(parts, FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")


def to_utc(wall: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The UTC instant of a local wall time: the first occurrence of an ambiguous one, the
    end of the gap for one the clock skips."""
    for _ in range(24 * 60):  # gaps are an hour or so; step past one a minute at a time
        aware = wall.replace(tzinfo=tz, fold=0)
        utc = aware.astimezone(UTC)
        if utc.astimezone(tz).replace(tzinfo=None) == wall:
            return utc.replace(tzinfo=None)
        wall += dt.timedelta(minutes=1)
    raise UsageError(f"no valid local time near {wall} in {tz}")  # pragma: no cover


def next_cron(cron: Cron, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The first fire time of ``cron`` strictly after ``after`` (naive UTC), None if there
    is none within five years (February 30th)."""
    local = after.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
    day = local.date() - dt.timedelta(days=1)  # the day before: a fall-back hour may repeat
    hours, minutes = sorted(cron.hours), sorted(cron.minutes)
    for _ in range(366 * 5 + 2):
        if cron.day_matches(day):
            for h in hours:
                for m in minutes:
                    utc = to_utc(dt.datetime(day.year, day.month, day.day, h, m), tz)
                    if utc > after:
                        return utc
        day += dt.timedelta(days=1)
    return None


def next_interval(anchor: dt.datetime, every: float, after: dt.datetime) -> dt.datetime:
    """The first tick ``anchor + k * every`` strictly after ``after`` (microsecond steps)."""
    step = dt.timedelta(seconds=every)
    if after < anchor:
        return anchor
    k = (after - anchor) // step + 1
    return anchor + k * step


@dataclass(frozen=True)
class Spec:
    """What decides a schedule's tick times."""

    every: float | None = None
    cron: Cron | None = None
    tz: dt.tzinfo = UTC
    anchor: dt.datetime = dt.datetime(2000, 1, 1)

    def next(self, after: dt.datetime) -> dt.datetime | None:
        if self.cron is not None:
            return next_cron(self.cron, after, self.tz)
        assert self.every is not None  # a spec has cron or every
        return next_interval(self.anchor, self.every, after)

    def upcoming(self, after: dt.datetime, n: int) -> list[dt.datetime]:
        out: list[dt.datetime] = []
        t: dt.datetime | None = after
        while len(out) < n and t is not None:
            t = self.next(t)
            if t is not None:
                out.append(t)
        return out


def jitter_of(key: str, tick: dt.datetime, jitter: float) -> dt.timedelta:
    """A tick's delay in [0, jitter): the same for every agent (a hash of the tick)."""
    if jitter <= 0:
        return dt.timedelta(0)
    h = int.from_bytes(hashlib.sha256(f"{key}|{tick.isoformat()}".encode()).digest()[:8], "big")
    return dt.timedelta(seconds=jitter * (h / 2 ** 64))


@dataclass(frozen=True)
class Decision:
    fire: list[dt.datetime]
    missed: list[dt.datetime]
    next_tick: dt.datetime | None  # the first tick not handled yet


def grace_of(tick: dt.datetime, following: dt.datetime | None, grace: float | None = None) -> dt.timedelta:
    """How late ``tick`` may fire and still count as on time: ``grace`` seconds if the
    schedule sets it, else a tenth of the gap to the ``following`` tick within
    [GRACE, GRACE_MAX]."""
    if grace is not None:
        return dt.timedelta(seconds=grace)
    if following is None:
        return GRACE_MAX
    return min(GRACE_MAX, max(GRACE, (following - tick) * GRACE_SHARE))


def decide(spec: Spec, next_tick: dt.datetime, now: dt.datetime, catch_up: str, *, key: str = "",
           jitter: float = 0.0, grace: float | None = None, batch: int = BATCH) -> Decision:
    """Which due ticks (from ``next_tick`` on, due by ``now``) to fire and which to record as
    missed. A tick within its grace (:func:`grace_of`) always fires; older ones (the agents
    were all down) follow ``catch_up``: skip none of them, fire ``one`` (the latest), or ``all``."""
    fire: list[dt.datetime] = []
    late: list[dt.datetime] = []
    t: dt.datetime | None = next_tick
    while t is not None and len(fire) + len(late) < batch:
        due = t + jitter_of(key, t, jitter)
        if due > now:
            break
        following = spec.next(t)
        (late if now - due > grace_of(t, following, grace) else fire).append(t)
        t = following
    if catch_up == "all" or not late:
        return Decision(sorted(late + fire), [], t)
    if catch_up == "one":
        return Decision([late[-1], *fire], late[:-1], t)
    return Decision(fire, late, t)
