"""Schedules: a socket called, or a named workflow started, on an interval or a cron
expression (the library side of ``ec add schedule``, ``ec ls schedules``, ``ec schedule
pause``...).

The rows live in the store (:mod:`ectool.store.schedules`); the agents fire them
(:mod:`ectool.scheduler`); the tick math is :mod:`ectool.schedule_math`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from . import schedule_math as sm
from .config import duration
from .errors import NotFound, UsageError
from .security import require
from .store.models import Call, Socket, db, now
from .store.schedules import CATCH_UP, Schedule, ScheduleTick

#: what ``ec ls schedules`` shows
COLUMNS = ["name", "socket", "workflow", "every", "cron", "timezone", "catch_up", "paused", "next_tick",
           "last_status"]
#: what ``ec ls calls --schedule NAME`` shows
CALL_COLUMNS = ["tick", "id", "socket", "status", "attempts", "submitted", "finished", "error_type"]
#: the fields ``ec update schedule NAME k=v`` may change
UPDATABLE = ("socket", "workflow", "every", "cron", "timezone", "data", "catch_up", "jitter", "grace")


def parse_every(text: Any) -> float:
    """A positive duration in seconds (``10s``, ``5m``, ``1h``, ``1d``)."""
    try:
        seconds = duration(text)
    except ValueError:
        raise UsageError(f"invalid interval {text!r} (a duration such as 30s, 10m, 2h, 1d)") from None
    if seconds <= 0:
        raise UsageError(f"the interval must be positive, got {text!r}")
    return seconds


def _non_negative(text: Any, what: str) -> float:
    try:
        seconds = duration(text)
    except ValueError:
        raise UsageError(f"invalid {what} {text!r} (a duration such as 30s)") from None
    if seconds < 0:
        raise UsageError(f"the {what} must not be negative, got {text!r}")
    return seconds


def parse_jitter(text: Any) -> float:
    return 0.0 if text in (None, "") else _non_negative(text, "jitter")


def parse_grace(text: Any) -> float | None:
    """A schedule's own grace in seconds, or None (derived from its interval)."""
    return None if text in (None, "") else _non_negative(text, "grace")


def spec_of(row: Schedule) -> sm.Spec:
    if row.cron:
        return sm.Spec(cron=sm.parse_cron(row.cron), tz=sm.zone(row.timezone or "UTC"))
    return sm.Spec(every=row.every, anchor=row.anchor)


def _check_target(socket: str | None, workflow: str | None) -> None:
    if (socket is None) == (workflow is None):
        raise UsageError("give exactly one of --socket SOCKET or --workflow WORKFLOW")
    if workflow is not None:
        from .workflow_defs import plan_of

        plan_of(workflow)
    elif Socket.get_or_none(Socket.name == socket) is None:
        raise NotFound(f"unknown socket {socket!r} (see 'ec ls sockets')")


def _check(row: Schedule) -> None:
    if (row.every is None) == (row.cron is None):
        raise UsageError("give exactly one of --every DURATION or --cron EXPR")
    if row.cron is not None:
        sm.parse_cron(row.cron)
    sm.zone(row.timezone)
    if row.catch_up not in CATCH_UP:
        raise UsageError(f"--catch-up must be one of {', '.join(CATCH_UP)}, got {row.catch_up!r}")
    _check_target(row.socket, row.workflow)


def _args_json(args: list[Any] | None, kwargs: dict[str, Any] | None) -> str:
    try:
        return json.dumps({"args": list(args or []), "kwargs": dict(kwargs or {})})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"schedule arguments are not JSON: {exc}") from None


def add(name: str, socket: str | None = None, *, workflow: str | None = None, every: Any = None,
        cron: str | None = None, args: list | None = None, kwargs: dict | None = None, catch_up: str = "skip",
        timezone: str = "UTC", jitter: Any = None, grace: Any = None, paused: bool = False) -> Schedule:
    """Store a new schedule calling ``socket`` or starting the named ``workflow`` (its
    arguments go to the workflow's first calls); its first tick is the first one after
    now. UsageError (exit 2) for bad input, nothing stored."""
    require("ADD_SCHEDULE")
    if not name or "\x00" in name:
        raise UsageError("a schedule needs a name")
    anchor = now().replace(microsecond=0)
    row = Schedule(name=name, socket=socket, workflow=workflow, every=None if every is None else parse_every(every),
                   cron=cron, timezone=timezone, args=_args_json(args, kwargs), catch_up=catch_up,
                   jitter=parse_jitter(jitter), grace=parse_grace(grace), paused=paused, anchor=anchor)
    _check(row)
    if Schedule.get_or_none(Schedule.name == name) is not None:
        raise UsageError(f"schedule {name!r} already exists (ec update schedule, or ec delete schedule)")
    row.next_tick = spec_of(row).next(anchor)
    row.save(force_insert=True)
    return row


def get(name: str) -> Schedule:
    row = Schedule.get_or_none(Schedule.name == name)
    if row is None:
        raise NotFound(f"unknown schedule {name!r} (see 'ec ls schedules')")
    return row


def update(name: str, changes: dict[str, str]) -> Schedule:
    """Change fields (``every=5m``, ``cron=...``, ``timezone=...``, ``data=[1,2]``, ...)."""
    require("UPDATE_SCHEDULE")
    row = get(name)
    for key, value in changes.items():
        if key not in UPDATABLE:
            raise UsageError(f"cannot update schedule field {key!r} (one of {', '.join(UPDATABLE)})")
        for field, v in _changes(key, value).items():
            setattr(row, field, v)
    _check(row)
    row.next_tick = spec_of(row).next(now())
    row.save()
    return row


def _changes(key: str, value: str) -> dict[str, Any]:
    """The fields one ``key=value`` of ``ec update schedule`` sets (pure but for the clock)."""
    if key == "every":
        return {"every": parse_every(value), "cron": None, "anchor": now().replace(microsecond=0)}
    if key == "cron":
        return {"cron": value, "every": None}
    if key in ("socket", "workflow"):  # one replaces the other
        return {"socket": None, "workflow": None, key: value}
    if key == "data":
        from .arguments import parse_data

        return {"args": _args_json(*parse_data(value))}
    if key == "jitter":
        return {"jitter": parse_jitter(value)}
    if key == "grace":
        return {"grace": parse_grace(value)}
    return {key: value}


def delete(name: str) -> None:
    require("DELETE_SCHEDULE")
    with db.atomic():
        row = get(name)
        ScheduleTick.delete().where(ScheduleTick.schedule == row.id).execute()
        row.delete_instance()


def set_paused(name: str, paused: bool) -> Schedule:
    """Pause (no tick fires; none counts as missed) or resume (from the next tick after now)."""
    require("UPDATE_SCHEDULE")
    row = get(name)
    if row.paused != paused:
        row.paused = paused
        if not paused:
            row.next_tick = spec_of(row).next(now())
        row.save()
    return row


def _stamp(t: dt.datetime | None) -> str | None:
    return None if t is None else t.replace(tzinfo=dt.UTC).isoformat(timespec="seconds")


def last_ticks(row: Schedule, n: int = 5) -> list[dict[str, Any]]:
    """The latest ``n`` handled ticks, newest first, with their calls' status."""
    ticks = list(ScheduleTick.select().where(ScheduleTick.schedule == row.id)
                 .order_by(ScheduleTick.tick.desc()).limit(n))
    status = {c.id: c.status for c in Call.select(Call.id, Call.status)
              .where(Call.id.in_([t.call for t in ticks if t.call] or [""]))}
    return [{"tick": _stamp(t.tick), "call": t.call,
             "status": status.get(t.call, "missed" if t.status == "missed" else "unknown")} for t in ticks]


def to_row(row: Schedule) -> dict[str, Any]:
    last = last_ticks(row, 1)
    return {"name": row.name, "socket": row.socket, "workflow": row.workflow, "every": row.every, "cron": row.cron,
            "timezone": row.timezone, "catch_up": row.catch_up, "jitter": row.jitter, "grace": row.grace,
            "paused": row.paused,
            "args": json.loads(row.args) if row.args else None,
            "next_tick": None if row.paused else _stamp(row.next_tick),
            "last_status": last[0]["status"] if last else None}


def list_schedules() -> list[dict[str, Any]]:
    require("READ_SCHEDULE")
    return [to_row(r) for r in Schedule.select().order_by(Schedule.name)]


def show(name: str, upcoming: int = 5, last: int = 5) -> dict[str, Any]:
    """One schedule: its fields, its next fire times and its ``last`` outcomes."""
    require("READ_SCHEDULE")
    row = get(name)
    out = to_row(row)
    spec = spec_of(row)
    first = row.next_tick or spec.next(now())
    nxt = [] if row.paused or first is None else [first, *spec.upcoming(first, upcoming - 1)]
    out["next_ticks"] = [_stamp(t) for t in nxt]
    out["last_ticks"] = last_ticks(row, last)
    return out


def calls(name: str, limit: int = 100, status: str | None = None) -> list[dict[str, Any]]:
    """The calls a schedule's ticks made (a workflow's root call for a workflow schedule),
    newest tick first, each with its tick (``ec ls calls --schedule NAME``)."""
    require("READ_SCHEDULE")
    require("READ_CALL")
    row = get(name)
    query = (ScheduleTick.select(ScheduleTick.tick, Call).join(Call, on=(ScheduleTick.call == Call.id), attr="call_row")
             .where(ScheduleTick.schedule == row.id))
    if status:
        query = query.where(Call.status == status)
    out = []
    for tk in query.order_by(ScheduleTick.tick.desc()).limit(limit):
        c = tk.call_row
        out.append({"tick": _stamp(tk.tick), "id": c.id, "socket": c.socket, "status": c.status,
                    "attempts": c.attempts, "submitted": _stamp(c.submitted), "started": _stamp(c.started),
                    "finished": _stamp(c.finished), "error_type": c.error_type, "error_message": c.error_message})
    return out


def summary() -> list[dict[str, Any]]:
    """Per schedule: next tick, how late it is, ticks fired/missed and failed calls (ec stats)."""
    from peewee import fn

    rows = []
    t = now()
    for s in Schedule.select().order_by(Schedule.name):
        fired = ScheduleTick.select(fn.COUNT(ScheduleTick.id)).where(
            (ScheduleTick.schedule == s.id) & (ScheduleTick.status == "fired")).scalar() or 0
        missed = ScheduleTick.select(fn.COUNT(ScheduleTick.id)).where(
            (ScheduleTick.schedule == s.id) & (ScheduleTick.status == "missed")).scalar() or 0
        failed = (Call.select(fn.COUNT(Call.id)).join(ScheduleTick, on=(ScheduleTick.call == Call.id))
                  .where((ScheduleTick.schedule == s.id) & Call.status.in_(("failed", "dead"))).scalar() or 0)
        late = 0.0 if s.paused or s.next_tick is None else max(0.0, (t - s.next_tick).total_seconds())
        rows.append({"schedule": s.name, "socket": s.socket or f"workflow {s.workflow}", "workflow": s.workflow,
                     "paused": s.paused,
                     "next_tick": None if s.paused else _stamp(s.next_tick), "late_s": round(late, 1),
                     "fired": fired, "missed": missed, "failed": failed})
    return rows


# -- ec compose ------------------------------------------------------------------------------

def _wanted(item: dict[str, Any]) -> dict[str, Any]:
    """The row fields a ``[[schedule]]`` table asks for (parsed and checked as ``add`` does)."""
    name = item["name"]
    args, kwargs = item.get("args", []), item.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise UsageError(f"schedule {name}: args must be a list and kwargs a table")
    return {"socket": item.get("socket"), "workflow": item.get("workflow"),
            "every": None if item.get("every") is None else parse_every(item["every"]), "cron": item.get("cron"),
            "timezone": item.get("timezone", "UTC"), "args": _args_json(args, kwargs),
            "catch_up": item.get("catch_up", "skip"), "jitter": parse_jitter(item.get("jitter")),
            "grace": parse_grace(item.get("grace"))}


def compose_apply(item: dict[str, Any]) -> str:
    """Create or update one ``[[schedule]]`` of a compose file; "created", "updated" or
    "unchanged" (applying the same file twice changes nothing)."""
    wanted = _wanted(item)
    row = Schedule.get_or_none(Schedule.name == item["name"])
    if row is None:
        payload = json.loads(wanted["args"])
        add(item["name"], wanted["socket"], workflow=wanted["workflow"], every=wanted["every"], cron=wanted["cron"],
            args=payload["args"], kwargs=payload["kwargs"], catch_up=wanted["catch_up"],
            timezone=wanted["timezone"], jitter=wanted["jitter"], grace=wanted["grace"])
        return "created"
    changed = {k: v for k, v in wanted.items() if getattr(row, k) != v}
    if not changed:
        return "unchanged"
    require("UPDATE_SCHEDULE")
    for k, v in changed.items():
        setattr(row, k, v)
    _check(row)
    row.next_tick = spec_of(row).next(now())
    row.save()
    return "updated"


def compose_rows() -> list[dict[str, Any]]:
    """Every schedule as a ``[[schedule]]`` table of ``ec compose export``."""
    out = []
    for s in Schedule.select().order_by(Schedule.name):
        payload = json.loads(s.args) if s.args else {}
        out.append({"name": s.name, "socket": s.socket, "workflow": s.workflow, "every": s.every, "cron": s.cron,
                    "timezone": s.timezone, "args": payload.get("args") or None,
                    "kwargs": payload.get("kwargs") or None, "catch_up": s.catch_up, "jitter": s.jitter or None,
                    "grace": s.grace})
    return out
