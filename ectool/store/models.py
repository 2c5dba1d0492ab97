"""The model store: one peewee model per object in DESIGN.md's vocabulary.

Models bind to :data:`db`, a proxy initialised by :func:`ectool.store.open_store`, so the
same classes serve SQLite and PostgreSQL. Enumerations are enforced by CHECK constraints
in the database, not only by Python.
"""

from __future__ import annotations

import datetime as dt

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    Check,
    DatabaseProxy,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

db = DatabaseProxy()


def on_sqlite() -> bool:
    """Whether the open store is SQLite (where the SQL dialects differ)."""
    return isinstance(db.obj, SqliteDatabase)

QUEUE_TYPES = ("direct", "topic", "fanout")
PROCESSOR_REQUESTED = ("running", "stopped", "paused")
PROCESSOR_STATUS = ("pending", "deploying", "running", "stopped", "paused", "error")
AGENT_STATUS = ("online", "offline", "lost")  # lost: released as stale by another agent
WORKER_STATUS = ("starting", "running", "stopped", "lost")  # schema v8: nothing set paused/stopping/crashed
#: what an admin asked of a node: ec node cordon|drain|uncordon (see ectool.nodes)
NODE_STATE = ("schedulable", "cordoned", "draining")
CALL_STATUS = ("queued", "running", "retrying", "done", "failed", "dead", "cancelled")
FINAL_CALL_STATUS = ("done", "failed", "dead", "cancelled")
#: python: a socket's task is a function of the module; exec: an executable file in the checkout
RUNTIMES = ("python", "exec")


def now() -> dt.datetime:
    """UTC now, naive (stored as UTC everywhere)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def one_of(column: str, values: tuple[str, ...]) -> Check:
    quoted = ", ".join(f"'{v}'" for v in values)
    return Check(f"{column} IN ({quoted})")


class Base(Model):
    created = DateTimeField(default=now)
    updated = DateTimeField(default=now)

    class Meta:
        database = db
        legacy_table_names = False

    def save(self, *args, **kwargs):
        self.updated = now()
        return super().save(*args, **kwargs)


class Node(Base):
    name = CharField(unique=True)
    cpus = IntegerField(default=1, constraints=[Check("cpus >= 1")])
    memory = IntegerField(null=True)
    state = CharField(default="schedulable", constraints=[one_of("state", NODE_STATE)])  # schema v5
    load1 = FloatField(null=True)  # the 1-minute load average its agents last reported (v5)


class Agent(Base):
    name = CharField(unique=True)
    node = ForeignKeyField(Node, backref="agents", on_delete="CASCADE")
    pid = IntegerField(null=True)
    cpus = IntegerField(default=1, constraints=[Check("cpus >= 1")])
    status = CharField(default="offline", constraints=[one_of("status", AGENT_STATUS)])
    heartbeat = DateTimeField(null=True)


class Queue(Base):
    name = CharField(unique=True)
    type = CharField(default="direct", constraints=[one_of("type", QUEUE_TYPES)])
    durable = BooleanField(default=True)
    queue_type = CharField(default="quorum", constraints=[one_of("queue_type", ("quorum", "classic"))])
    max_length = IntegerField(null=True, constraints=[Check("max_length IS NULL OR max_length > 0")])


class Processor(Base):
    name = CharField(unique=True)
    gitrepo = TextField()
    module = CharField()
    branch = CharField(null=True)  # None: the repository's default branch (its HEAD), as git clone
    commit = CharField(null=True)
    concurrency = IntegerField(default=1, constraints=[Check("concurrency >= 1")])
    host = CharField(null=True)
    runtime = CharField(default="python", constraints=[one_of("runtime", RUNTIMES)])
    requested_status = CharField(
        default="running", constraints=[one_of("requested_status", PROCESSOR_REQUESTED)]
    )
    status = CharField(default="pending", constraints=[one_of("status", PROCESSOR_STATUS)])
    status_reason = TextField(null=True)
    deployed_branch = CharField(null=True)  # what an agent last deployed (schema v5)
    deployed_commit = CharField(null=True)


class Socket(Base):
    name = CharField(unique=True)
    processor = ForeignKeyField(Processor, backref="sockets", on_delete="RESTRICT")
    task = CharField()
    queue = ForeignKeyField(Queue, backref="sockets", on_delete="RESTRICT")
    concurrency = IntegerField(default=1, constraints=[Check("concurrency >= 1")])
    retries = IntegerField(default=0, constraints=[Check("retries >= 0")])
    backoff = FloatField(default=1.0, constraints=[Check("backoff >= 0")])
    timeout = FloatField(null=True, constraints=[Check("timeout IS NULL OR timeout > 0")])


class Plug(Base):
    """A dataflow edge: each outcome of ``source`` (its result, or its error with
    ``fires_on="error"``) becomes a call of ``target``; with ``argument`` it is bound to that
    keyword and the target fires once all its bound arguments arrived in the same flow."""

    name = CharField(unique=True)
    source = ForeignKeyField(Socket, backref="plugs_out", on_delete="RESTRICT")
    target = ForeignKeyField(Socket, backref="plugs_in", on_delete="RESTRICT")
    argument = CharField(null=True)
    fires_on = CharField(default="result", constraints=[one_of("fires_on", ("result", "error"))])


class Placement(Base):
    """Which agent runs how many workers of a processor (claimed transactionally)."""

    processor = ForeignKeyField(Processor, backref="placements", on_delete="CASCADE")
    agent = ForeignKeyField(Agent, backref="placements", on_delete="CASCADE")
    workers = IntegerField(default=1, constraints=[Check("workers >= 1")])

    class Meta:
        indexes = ((("processor", "agent"), True),)


class Worker(Base):
    processor = ForeignKeyField(Processor, backref="workers", on_delete="CASCADE")
    agent = ForeignKeyField(Agent, null=True, backref="workers", on_delete="SET NULL")
    node = ForeignKeyField(Node, null=True, on_delete="SET NULL")
    host = CharField()
    pid = IntegerField()
    cpu = IntegerField(null=True)
    commit = CharField(null=True)
    status = CharField(default="starting", constraints=[one_of("status", WORKER_STATUS)])
    heartbeat = DateTimeField(null=True)


class Call(Base):
    id = CharField(primary_key=True, max_length=36)
    socket = CharField(index=True)
    parent = CharField(null=True, index=True)
    root = CharField(index=True)
    flow = CharField(null=True, index=True)
    status = CharField(default="queued", index=True, constraints=[one_of("status", CALL_STATUS)])
    attempts = IntegerField(default=0)
    args = TextField(null=True)
    submitted = DateTimeField(default=now, index=True)
    started = DateTimeField(null=True)
    finished = DateTimeField(null=True, index=True)  # stats windows and rollups (schema v4)
    host = CharField(null=True)
    worker_pid = IntegerField(null=True)
    result = TextField(null=True)
    error_type = CharField(null=True)
    error_message = TextField(null=True)
    traceback = TextField(null=True)
    log = TextField(null=True)  # what the call printed (stdout/stderr; a script's stderr), the tail
    # provenance (schema v11): what ran the call, set by the worker when it claims it
    processor = CharField(null=True)
    commit = CharField(null=True, index=True)
    runtime = CharField(null=True)  # python | exec
    replay_of = CharField(null=True, index=True)  # the call this one replays (ec replay)


class Workflow(Model):
    """A workflow's plan (immutable) and where to send its outcome; its state is the root
    call (same id) and the calls under it."""

    id = CharField(primary_key=True, max_length=36)
    plan = TextField()
    reply_to = CharField(null=True)
    created = DateTimeField(default=now)

    class Meta:
        database = db
        legacy_table_names = False


class JoinSlot(Model):
    """One member's result in a parallel join; unique per slot so a redelivered member
    can never fill it twice."""

    workflow = CharField(max_length=36)
    node = CharField(max_length=36)  # the parallel node's call id
    slot = IntegerField()
    value = TextField()

    class Meta:
        database = db
        legacy_table_names = False
        indexes = ((("node", "slot"), True),)


class Event(Model):
    id = AutoField()
    time = DateTimeField(default=now, index=True)
    kind = CharField(index=True)
    call = CharField(null=True, index=True)
    socket = CharField(null=True)
    host = CharField(null=True)
    pid = IntegerField(null=True)
    data = TextField(null=True)

    class Meta:
        database = db
        legacy_table_names = False


class MinuteStat(Model):
    """One socket's calls in one whole minute (UTC), rolled up from the Call rows by
    :func:`ectool.metrics.rollup` so that history outlives them (kept ``stats_retention``).

    ``submitted`` counts calls submitted in the minute; ``done``/``failed``/``dead``/
    ``cancelled`` calls finished in it with that status, ``retried`` those of them that took
    more than one attempt. Run time (finished - started) and queue wait (started -
    submitted) of its ``timed`` calls (done or failed, started) are kept as exact
    percentiles of the minute and as log-bucket histograms (JSON ``{bucket: count}``, see
    :func:`ectool.metrics.bucket`) that windows merge. The row with ``socket = ''`` holds
    the minute's totals over all sockets and marks it as rolled up.
    """

    minute = DateTimeField()
    socket = CharField()
    submitted = IntegerField(default=0)
    done = IntegerField(default=0)
    failed = IntegerField(default=0)
    dead = IntegerField(default=0)
    cancelled = IntegerField(default=0)
    retried = IntegerField(default=0)
    timed = IntegerField(default=0)
    run_ms_sum = FloatField(default=0.0)
    run_p50_ms = FloatField(null=True)
    run_p95_ms = FloatField(null=True)
    run_p99_ms = FloatField(null=True)
    wait_p50_ms = FloatField(null=True)
    run_hist = TextField(default="{}")
    wait_hist = TextField(default="{}")

    class Meta:
        database = db
        legacy_table_names = False
        indexes = ((("minute", "socket"), True),)


class User(Base):
    name = CharField(unique=True)


class Role(Base):
    name = CharField(unique=True)


class Privilege(Base):
    name = CharField(unique=True)


class UserRole(Model):
    user = ForeignKeyField(User, on_delete="CASCADE")
    role = ForeignKeyField(Role, on_delete="CASCADE")

    class Meta:
        database = db
        legacy_table_names = False
        indexes = ((("user", "role"), True),)


class RolePrivilege(Model):
    role = ForeignKeyField(Role, on_delete="CASCADE")
    privilege = ForeignKeyField(Privilege, on_delete="CASCADE")

    class Meta:
        database = db
        legacy_table_names = False
        indexes = ((("role", "privilege"), True),)


class Trust(Base):
    """A trusted-repository pattern (fnmatch); only matching repositories are deployed."""

    pattern = CharField(unique=True)


class SchemaVersion(Model):
    version = IntegerField()

    class Meta:
        database = db
        table_name = "ec_schema"


MODELS = [
    Node, Agent, Queue, Processor, Socket, Plug, Placement, Worker, Call, Workflow, JoinSlot, Event,
    MinuteStat, User, Role, Privilege, UserRole, RolePrivilege, Trust,
]

#: object kinds addressable by name from the CLI (`ec ls KIND`, `ec show KIND NAME`)
KINDS = {
    "node": Node, "queue": Queue, "processor": Processor, "socket": Socket, "plug": Plug,
    "user": User, "role": Role, "privilege": Privilege, "trust": Trust,
}
