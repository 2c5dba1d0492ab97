"""Firing schedules: every agent runs :func:`fire_due` each round; no beat process.

A due tick is claimed by inserting its unique (schedule, tick) row and its call's row in
one transaction; the call id is derived from the tick (:func:`tick_call_id`), so a retried
or concurrent claim never makes a second call. The message is published after the commit;
a claimed tick whose publish failed (the agent died, the broker went) is published again
by a later round of any agent (:func:`republish`).

A workflow schedule's tick claims the same way: the workflow's plan (its run's copy) and
its root call row, whose id (the workflow's id) derives from the tick, are written in the
claim's transaction; after the commit the engine begins it (:meth:`Engine.begin`: its
first calls' ids derive from the workflow's, so beginning again re-sends, never doubles).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

from . import events
from . import schedule_math as sm
from . import workflow as wfp
from .errors import EcError
from .messages import CallEncoder
from .publisher import Publisher, Target
from .store.ledger import INSERT_COLUMNS, insert_sql
from .store.models import FINAL_CALL_STATUS, Call, Workflow, db, now
from .store.schedules import Schedule, ScheduleTick

log = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("6d1c0b2e-5f0a-4c55-9a51-ec5c4ed01e18")
#: a tick claimed this long ago and still unpublished is published again (its claimer died)
REPUBLISH_AFTER = dt.timedelta(seconds=10)
#: a workflow's root call row is inserted running, with its start time
ROOT_COLUMNS = (*INSERT_COLUMNS, "started")
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


class _What:
    """What a schedule's ticks call: a socket's target, or a workflow's plan (its sockets
    resolved: an unknown one fails the claim before anything is written)."""

    def __init__(self, row: Schedule, publisher: Publisher) -> None:
        self.payload = json.loads(row.args) if row.args else {"args": [], "kwargs": {}}
        self.target: Target | None = None
        self.plan: dict | None = None
        if row.workflow:
            from .workflow_defs import plan_of, sockets, with_input

            self.plan = with_input(plan_of(row.workflow), self.payload.get("args", []),
                                   self.payload.get("kwargs", {}))
            for socket in sockets(self.plan):
                publisher.target(socket)
        else:
            self.target = publisher.target(row.socket)


def _insert_call(row: Schedule, what: _What, tick: dt.datetime, cid: str, stamp: dt.datetime,
                 max_bytes: int | None) -> bytes | None:
    """The tick's call row (inside the claim's transaction); the message to publish, or
    None for a workflow (the engine begins it after the commit)."""
    database = db.obj
    p = database.param
    flow = flow_of(row.name, tick)
    if what.plan is not None:
        Workflow.insert(id=cid, plan=json.dumps(what.plan), reply_to=None).execute()
        database.execute_sql(insert_sql(p, 1, ROOT_COLUMNS, True),
                             (cid, stamp, stamp, wfp.label(what.plan), None, cid, flow, "running", 0,
                              json.dumps(what.payload), stamp, stamp))
        return None
    assert what.target is not None
    t = what.target
    encoder = CallEncoder(t.socket, t.task, flow=flow, max_bytes=max_bytes)
    body, args_json = encoder.encode(cid, cid, what.payload.get("args", []), what.payload.get("kwargs", {}))
    database.execute_sql(insert_sql(p, 1, INSERT_COLUMNS, True),
                         (cid, stamp, stamp, row.socket, None, cid, flow, "queued", 0, args_json, stamp))
    return body


def _claim(row: Schedule, decision: sm.Decision, agent: str, max_bytes: int | None,
           publisher: Publisher, stamp: dt.datetime) -> tuple[_What | None, list[tuple[dt.datetime, str, bytes | None]]]:
    """Insert the tick rows (and the fired ones' call rows) in one transaction; return what
    the ticks call and the (tick, call id, message) of the ticks this agent won. ``stamp``,
    the time the decision was made at, is each tick's ``claimed``: a tick fired late is one
    claimed over its grace after its time."""
    database = db.obj
    p = database.param
    won: list[tuple[dt.datetime, str, bytes | None]] = []
    what: _What | None = None
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
            what = what or _What(row, publisher)
            won.append((tick, cid, _insert_call(row, what, tick, cid, stamp, max_bytes)))
        if decision.next_tick is not None:  # never back: a slower agent's round may end after ours
            Schedule.update(next_tick=decision.next_tick).where(
                (Schedule.id == row.id) & (Schedule.next_tick < decision.next_tick)).execute()
    return what, won


def _engine(publisher: Publisher, max_bytes: int | None):
    from .engine import Engine

    return Engine(publisher.transport, max_bytes, publisher.namespace, publisher=publisher)


def _publish(row: Schedule, what: _What | None, won: list[tuple[dt.datetime, str, bytes | None]],
             publisher: Publisher, max_bytes: int | None) -> None:
    if not won or what is None:
        return
    if what.plan is not None:
        engine = _engine(publisher, max_bytes)
        for tick, cid, _ in won:
            engine.begin(cid, what.plan, [], False, None, flow_of(row.name, tick))
    else:
        assert what.target is not None
        publisher.publish(what.target, [body for _, _, body in won if body is not None])
    ScheduleTick.update(published=True).where(
        (ScheduleTick.schedule == row.id) & ScheduleTick.tick.in_([t for t, _, _ in won])).execute()
    for tick, cid, _ in won:
        events.emit("schedule.fired", schedule=row.name, tick=tick.isoformat(), call=cid,
                    **({"workflow": row.workflow} if row.workflow else {"socket": row.socket}))


def _resend_call(publisher: Publisher, call: Call, max_bytes: int | None) -> bool:
    """A socket tick's call: sent again while still ``queued``."""
    if call.status != "queued":
        return False
    t = publisher.target(call.socket)
    payload = json.loads(call.args) if call.args else {"args": [], "kwargs": {}}
    body, _ = CallEncoder(t.socket, t.task, flow=call.flow, max_bytes=max_bytes).encode(
        call.id, call.id, payload.get("args", []), payload.get("kwargs", {}))
    publisher.publish(t, [body])
    return True


def _resend_workflow(engine, call: Call, plan: dict) -> bool:
    """A workflow tick's root: begun again while it runs and one of its first calls is
    missing or still ``queued`` (the ids are the same: nothing doubles)."""
    if call.status in FINAL_CALL_STATUS:
        return False
    first = [wfp.node_id(call.id, path) for path, _, _ in wfp.start(plan, [], False).calls]
    seen = {c.id: c.status for c in Call.select(Call.id, Call.status).where(Call.id.in_(first or [""]))}
    if first and all(seen.get(i, "queued") != "queued" for i in first):
        return False
    engine.begin(call.id, plan, [], False, None, call.flow)
    return True


def republish(publisher: Publisher, max_bytes: int | None, at: dt.datetime | None = None) -> int:
    """Publish again the fired ticks claimed over :data:`REPUBLISH_AFTER` ago whose publish
    never confirmed; returns how many. A tick whose call already left ``queued`` (a
    workflow's first calls, theirs) only gets its flag set (it was published; the flag's
    update was what failed)."""
    stale = list(ScheduleTick.select(ScheduleTick, Schedule).join(Schedule).where(
        (ScheduleTick.published == False) & (ScheduleTick.status == "fired")  # noqa: E712
        & (ScheduleTick.claimed < (at or now()) - REPUBLISH_AFTER)).order_by(ScheduleTick.tick).limit(sm.BATCH))
    sent = 0
    engine = None
    for tk in stale:
        call = Call.get_or_none(Call.id == tk.call)
        run = None if call is None else Workflow.get_or_none(Workflow.id == call.id)
        try:
            if run is not None:
                engine = engine or _engine(publisher, max_bytes)
                again = _resend_workflow(engine, call, json.loads(run.plan))
            else:
                again = call is not None and _resend_call(publisher, call, max_bytes)
        except EcError as exc:  # a socket was deleted since: the call cannot be sent
            log.warning("schedule %s: tick %s: %s", tk.schedule.name, tk.tick, exc)
            Call.update(status="cancelled", error_type="NotSent", error_message=str(exc)[:500],
                        finished=now()).where((Call.id == call.id) & Call.status.in_(("queued", "running"))).execute()
            again = False
        if again:
            sent += 1
            events.emit("schedule.fired", schedule=tk.schedule.name, tick=tk.tick.isoformat(), call=call.id,
                        **({"workflow": tk.schedule.workflow} if run else {"socket": call.socket}), republished=True)
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
                decision = sm.decide(spec, row.next_tick, t, row.catch_up, key=str(row.id), jitter=row.jitter,
                                     grace=row.grace)
                what, won = _claim(row, decision, agent, max_bytes, publisher, t)
            except EcError as exc:  # its socket was deleted, its arguments too big: logged, left as is
                log.warning("schedule %s: %s", row.name, exc)
                continue
            row.next_tick = decision.next_tick
            try:
                _publish(row, what, won, publisher, max_bytes)
            except Exception as exc:  # noqa: BLE001 - claimed, unpublished: republish() sends them later
                log.warning("schedule %s: publishing %d tick(s) failed (%s); a later round sends them",
                            row.name, len(won), exc)
        if row.next_tick is not None and (soonest is None or row.next_tick < soonest):
            soonest = row.next_tick
    return None if soonest is None else max(0.0, (soonest - now()).total_seconds())


def schedules_spec(row: Schedule) -> sm.Spec:
    from .schedules import spec_of

    return spec_of(row)
