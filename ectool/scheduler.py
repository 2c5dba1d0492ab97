"""Firing schedules: every agent runs :func:`fire_due` each round; no beat process.

A due tick is claimed by inserting its unique (schedule, tick) row and its call's row in
one transaction; the call id is derived from the tick (:func:`tick_call_id`), so a retried
or concurrent claim never makes a second call. The message is published after the commit;
a claimed tick whose publish failed (the agent died, the broker went) is published again
by a later round of any agent (:func:`republish`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

from . import events
from . import schedule_math as sm
from .errors import EcError
from .messages import CallEncoder
from .publisher import Publisher
from .store.ledger import INSERT_COLUMNS, insert_sql
from .store.models import Call, db, now
from .store.schedules import Schedule, ScheduleTick

log = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("6d1c0b2e-5f0a-4c55-9a51-ec5c4ed01e18")
#: a tick claimed this long ago and still unpublished is published again (its claimer died)
REPUBLISH_AFTER = dt.timedelta(seconds=10)
TICK_SQL = ('INSERT INTO "schedule_tick" ("schedule_id", "tick", "status", "call", "claimed", "agent", "published") '
            "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING")


def tick_call_id(schedule_id: int, tick: dt.datetime) -> str:
    """The call id of a schedule's tick: the same for every agent and every retry."""
    return str(uuid.uuid5(NAMESPACE, f"{schedule_id}|{tick.isoformat()}"))


def flow_of(name: str, tick: dt.datetime) -> str:
    """The flow of a tick's call and of the calls its plugs make (``ec ls calls --flow
    schedule:NAME@TICK``): one per tick, so a fan-in plug downstream never mixes two
    ticks' arguments (its scope is the flow)."""
    return f"schedule:{name}@{tick.isoformat(timespec='milliseconds')}Z"


def _claim(row: Schedule, decision: sm.Decision, agent: str, max_bytes: int | None,
           publisher: Publisher, stamp: dt.datetime) -> list[tuple[dt.datetime, str, bytes]]:
    """Insert the tick rows (and the fired ones' call rows) in one transaction; return the
    (tick, call id, message) of the ticks this agent won. ``stamp``, the time the decision
    was made at, is each tick's ``claimed``: a tick fired late is one claimed over the grace
    after its time."""
    database = db.obj
    p = database.param
    won: list[tuple[dt.datetime, str, bytes]] = []
    payload = json.loads(row.args) if row.args else {"args": [], "kwargs": {}}
    with db.atomic():
        for tick in decision.missed:
            if database.execute_sql(TICK_SQL.format(p=p), (row.id, tick, "missed", None, stamp, agent,
                                                           True)).rowcount:
                events.emit("schedule.missed", schedule=row.name, tick=tick.isoformat())
        for tick in decision.fire:
            cid = tick_call_id(row.id, tick)
            if not database.execute_sql(TICK_SQL.format(p=p), (row.id, tick, "fired", cid, stamp, agent,
                                                               False)).rowcount:
                continue  # another agent claimed it
            t = publisher.target(row.socket)
            encoder = CallEncoder(t.socket, t.task, flow=flow_of(row.name, tick), max_bytes=max_bytes)
            body, args_json = encoder.encode(cid, cid, payload.get("args", []), payload.get("kwargs", {}))
            database.execute_sql(insert_sql(p, 1, INSERT_COLUMNS, True),
                                 (cid, stamp, stamp, row.socket, None, cid, flow_of(row.name, tick), "queued", 0,
                                  args_json, stamp))
            won.append((tick, cid, body))
        if decision.next_tick is not None:  # never back: a slower agent's round may end after ours
            Schedule.update(next_tick=decision.next_tick).where(
                (Schedule.id == row.id) & (Schedule.next_tick < decision.next_tick)).execute()
    return won


def _publish(row_name: str, socket: str, won: list[tuple[dt.datetime, str, bytes]], schedule_id: int,
             publisher: Publisher) -> None:
    if not won:
        return
    publisher.publish(publisher.target(socket), [body for _, _, body in won])
    ScheduleTick.update(published=True).where(
        (ScheduleTick.schedule == schedule_id) & ScheduleTick.tick.in_([t for t, _, _ in won])).execute()
    for tick, cid, _ in won:
        events.emit("schedule.fired", schedule=row_name, tick=tick.isoformat(), call=cid, socket=socket)


def republish(publisher: Publisher, max_bytes: int | None, at: dt.datetime | None = None) -> int:
    """Publish again the fired ticks claimed over :data:`REPUBLISH_AFTER` ago whose publish
    never confirmed; returns how many. A tick whose call already left ``queued`` only gets
    its flag set (it was published; the flag's update was what failed)."""
    stale = list(ScheduleTick.select(ScheduleTick, Schedule).join(Schedule).where(
        (ScheduleTick.published == False) & (ScheduleTick.status == "fired")  # noqa: E712
        & (ScheduleTick.claimed < (at or now()) - REPUBLISH_AFTER)).order_by(ScheduleTick.tick).limit(sm.BATCH))
    sent = 0
    for tk in stale:
        call = Call.get_or_none(Call.id == tk.call)
        if call is not None and call.status == "queued":
            try:
                t = publisher.target(call.socket)
                payload = json.loads(call.args) if call.args else {"args": [], "kwargs": {}}
                body, _ = CallEncoder(t.socket, t.task, flow=call.flow, max_bytes=max_bytes).encode(
                    call.id, call.id, payload.get("args", []), payload.get("kwargs", {}))
            except EcError as exc:  # its socket was deleted since: the call cannot be sent
                log.warning("schedule %s: tick %s: %s", tk.schedule.name, tk.tick, exc)
                Call.update(status="cancelled", error_type="NotSent", error_message=str(exc)[:500],
                            finished=now()).where((Call.id == call.id) & (Call.status == "queued")).execute()
                ScheduleTick.update(published=True).where(ScheduleTick.id == tk.id).execute()
                continue
            publisher.publish(t, [body])
            sent += 1
            events.emit("schedule.fired", schedule=tk.schedule.name, tick=tk.tick.isoformat(), call=call.id,
                        socket=t.socket, republished=True)
        ScheduleTick.update(published=True).where(ScheduleTick.id == tk.id).execute()
    return sent


def fire_due(publisher: Publisher, agent: str, max_bytes: int | None = None,
             at: dt.datetime | None = None) -> float | None:
    """Fire every due tick of every running schedule; return the seconds until the next
    tick is due (None: no schedule). Errors of one schedule (its socket deleted) are
    logged and leave it for the next round; store errors go up to the agent's loop."""
    t = at or now()
    republish(publisher, max_bytes, t)
    soonest: dt.datetime | None = None
    for row in Schedule.select().where((Schedule.paused == False) & Schedule.next_tick.is_null(False)):  # noqa: E712
        if row.next_tick <= t:
            try:
                spec = schedules_spec(row)
                decision = sm.decide(spec, row.next_tick, t, row.catch_up, key=str(row.id), jitter=row.jitter)
                won = _claim(row, decision, agent, max_bytes, publisher, t)
            except EcError as exc:  # its socket was deleted, its arguments too big: logged, left as is
                log.warning("schedule %s: %s", row.name, exc)
                continue
            row.next_tick = decision.next_tick
            try:
                _publish(row.name, row.socket, won, row.id, publisher)
            except Exception as exc:  # noqa: BLE001 - claimed, unpublished: republish() sends them later
                log.warning("schedule %s: publishing %d tick(s) failed (%s); a later round sends them",
                            row.name, len(won), exc)
        if row.next_tick is not None and (soonest is None or row.next_tick < soonest):
            soonest = row.next_tick
    return None if soonest is None else max(0.0, (soonest - now()).total_seconds())


def schedules_spec(row: Schedule) -> sm.Spec:
    from .schedules import spec_of

    return spec_of(row)
