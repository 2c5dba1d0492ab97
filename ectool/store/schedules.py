"""The store's schedule rows (schema v7, v8): a schedule, one row per handled tick, and
the named workflows a schedule may start (v8; compose's ``[[workflow]]`` tables).

A tick row is unique per (schedule, tick time): the claim. The agent that inserts it
inserts the tick's call row in the same transaction, so a tick fires exactly once however
many agents try, and ``published`` says whether its message reached the broker (a claimed
tick whose publish failed is published again by a later round).
"""

from __future__ import annotations

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    Model,
    TextField,
)

from .models import Base, db, now, one_of

CATCH_UP = ("skip", "one", "all")
TICK_STATUS = ("fired", "missed")


class Schedule(Base):
    name = CharField(unique=True)
    socket = CharField(null=True)  # a socket's name, or (v8)
    workflow = CharField(null=True)  # a named workflow's (exactly one of the two)
    every = FloatField(null=True)  # seconds; or cron
    cron = CharField(null=True)
    timezone = CharField(default="UTC")
    args = TextField(null=True)  # {"args": [...], "kwargs": {...}}
    catch_up = CharField(default="skip", constraints=[one_of("catch_up", CATCH_UP)])
    jitter = FloatField(default=0.0)
    paused = BooleanField(default=False)
    anchor = DateTimeField(default=now)  # interval ticks are anchor + k * every
    next_tick = DateTimeField(null=True, index=True)  # the first tick not handled yet
    grace = FloatField(null=True)  # seconds a tick may be late and still fire (v8; None: derived)


class ScheduleTick(Model):
    schedule = ForeignKeyField(Schedule, backref="ticks", on_delete="CASCADE")
    tick = DateTimeField()
    status = CharField(default="fired", constraints=[one_of("status", TICK_STATUS)])
    call = CharField(null=True, max_length=36)
    claimed = DateTimeField(default=now)
    agent = CharField(null=True)
    published = BooleanField(default=False, index=True)

    class Meta:
        database = db
        legacy_table_names = False
        indexes = ((("schedule", "tick"), True),)


class NamedWorkflow(Base):
    """A pipeline/parallel/funnel under a name (:mod:`ectool.workflow_defs`); its plan is
    the engine's (:mod:`ectool.workflow`), copied into each run when a tick starts it."""

    name = CharField(unique=True)
    plan = TextField()


SCHEDULE_MODELS = [Schedule, ScheduleTick, NamedWorkflow]
