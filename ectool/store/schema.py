"""Schema versioning: create, upgrade step by step, drop.

Each release that changes the tables adds a function to :data:`MIGRATIONS` taking the
store from version ``n`` to ``n + 1``. Every step runs in a transaction where the database
allows (PostgreSQL; SQLite for all but a few ALTERs), so a failed upgrade leaves the old
version intact.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from peewee import Database, OperationalError, ProgrammingError, SqliteDatabase, TextField

from ..errors import UsageError
from .models import (
    AGENT_STATUS,
    MODELS,
    NODE_STATE,
    WORKER_STATUS,
    Call,
    JoinSlot,
    MinuteStat,
    Processor,
    SchemaVersion,
    Workflow,
)
from .schedules import SCHEDULE_MODELS
from .streams import STREAM_MODELS

CURRENT = 11

#: Worker.status's values from v5 to v7 (v8 dropped the three nothing ever set)
WORKER_STATUS_V5 = ("starting", "running", "paused", "stopping", "stopped", "crashed", "lost")


def _migrator(database: Database):
    # imported here: every command opens the store, few of them migrate it
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator

    if isinstance(database, SqliteDatabase):
        return SqliteMigrator(database)
    return PostgresqlMigrator(database)


@contextmanager
def foreign_keys_off(database: Database):
    """SQLite rebuilds a table to change a column's NULL constraint (copy, drop, rename);
    dropping a table others reference fails while foreign keys are enforced, and the pragma
    only changes outside a transaction. So: off around the steps, checked, then on again."""
    if not isinstance(database, SqliteDatabase):
        yield
        return
    database.execute_sql("PRAGMA foreign_keys = OFF")
    try:
        yield
        broken = database.execute_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise UsageError(f"the upgrade broke {len(broken)} foreign key(s), first {broken[0]}")
    finally:
        database.execute_sql("PRAGMA foreign_keys = ON")


def _migrate(*operations) -> None:
    from playhouse.migrate import migrate

    migrate(*operations)


def _v1_to_v2(database: Database) -> None:
    """v2 records why a processor is in its status and which shell flow a call belongs to."""
    m = _migrator(database)
    _migrate(
        m.add_column("processor", "status_reason", TextField(null=True)),
        m.add_column("call", "flow", Call.flow),  # indexed, as the field says
    )


def _v2_to_v3(database: Database) -> None:
    """v3 records workflow plans and parallel joins."""
    database.create_tables([Workflow, JoinSlot])


def _v3_to_v4(database: Database) -> None:
    """v4 keeps per-minute call statistics (``ec stats`` history) and indexes
    ``call.finished`` for the stats windows."""
    database.create_tables([MinuteStat])
    _migrate(_migrator(database).add_index("call", ("finished",), False))  # named call_finished, as the field's


def _v4_to_v5(database: Database) -> None:
    """v5 records what an admin asked of a node (``state``: cordon, drain) and its load,
    and lets agents and workers be marked ``lost`` (their CHECKs widened)."""
    states = ", ".join(f"'{s}'" for s in NODE_STATE)
    database.execute_sql(f"ALTER TABLE node ADD COLUMN state VARCHAR(255) NOT NULL DEFAULT 'schedulable' "
                         f"CHECK (state IN ({states}))")
    database.execute_sql("ALTER TABLE node ADD COLUMN load1 REAL")
    _set_check(database, "agent", "status", AGENT_STATUS[:-1], AGENT_STATUS)
    _set_check(database, "worker", "status", WORKER_STATUS_V5[:-1], WORKER_STATUS_V5)


def _set_check(database: Database, table: str, column: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
    """Let ``column`` of ``table`` take the values ``new`` instead of ``old``; every stored
    row must already hold one of ``new`` (the caller sees to that).

    PostgreSQL drops the column's CHECK and adds the new one. SQLite cannot alter a
    constraint, but a change that leaves every stored row valid may rewrite the table's
    definition in place (https://sqlite.org/lang_altertable.html, "otherwise": the
    writable_schema procedure), which beats copying the table under its foreign keys."""
    def listed(values: tuple[str, ...]) -> str:
        return f"{column} IN ({', '.join(repr(v) for v in values)})"

    if isinstance(database, SqliteDatabase):
        version = database.execute_sql("PRAGMA schema_version").fetchone()[0]
        database.execute_sql("PRAGMA writable_schema = ON")
        database.execute_sql("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = ?",
                             (listed(old), listed(new), table))
        database.execute_sql(f"PRAGMA schema_version = {version + 1}")
        database.execute_sql("PRAGMA writable_schema = OFF")
        return
    checks = database.execute_sql(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c' "
        "AND pg_get_constraintdef(oid) LIKE %s", (table, f"%{column}%")).fetchall()
    for (name,) in checks:
        database.execute_sql(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    database.execute_sql(f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_{column}_check" CHECK ({listed(new)})')


def _v5_to_v6(database: Database) -> None:
    """v6: a processor's branch may be null (the repository's default branch, its HEAD, as
    ``git clone`` follows; it was "main" whatever the repository used), and it records the
    branch and commit an agent deployed. Existing branches keep their value."""
    m = _migrator(database)
    _migrate(
        m.drop_not_null("processor", "branch"),
        m.add_column("processor", "deployed_branch", Processor.deployed_branch),
        m.add_column("processor", "deployed_commit", Processor.deployed_commit),
    )


def _v6_to_v7(database: Database) -> None:
    """v7 keeps schedules and their claimed ticks (:mod:`ectool.store.schedules`)."""
    database.create_tables(SCHEDULE_MODELS)


def _v7_to_v8(database: Database) -> None:
    """v8: a worker's status is one of ``WORKER_STATUS``; paused, stopping and crashed were
    declared but never set by anything (a row holding one, from a hand edit, is stopped)."""
    dropped = ", ".join(f"'{s}'" for s in WORKER_STATUS_V5 if s not in WORKER_STATUS)
    database.execute_sql(f"UPDATE worker SET status = 'stopped' WHERE status IN ({dropped})")
    _set_check(database, "worker", "status", WORKER_STATUS_V5, WORKER_STATUS)


def _v8_to_v9(database: Database) -> None:
    """v9: a schedule may start a named workflow instead of a socket (``schedule.socket``
    nullable, ``schedule.workflow``), may set its own grace, and named workflows are kept
    (``named_workflow``). Idempotent: v7's step creates the schedule tables as the models
    now declare them."""
    from .schedules import NamedWorkflow, Schedule

    have = {c.name for c in database.get_columns("schedule")}
    m = _migrator(database)
    ops = [m.add_column("schedule", name, getattr(Schedule, name)) for name in ("workflow", "grace")
           if name not in have]
    _migrate(*ops, m.drop_not_null("schedule", "socket"))
    database.create_tables([NamedWorkflow], safe=True)


def _v9_to_v10(database: Database) -> None:
    """v10 keeps named streams (``ec map --name``, ``ec attach``): a stream and its input
    lines with their call ids (:mod:`ectool.store.streams`)."""
    database.create_tables(STREAM_MODELS, safe=True)


def _v10_to_v11(database: Database) -> None:
    """v11 records each call's provenance: the processor, commit and runtime that ran it
    (``call.processor``, ``call.commit``, ``call.runtime``) and the call it replays
    (``call.replay_of``, ``ec replay``). Idempotent: columns already there are kept."""
    have = {c.name for c in database.get_columns("call")}
    m = _migrator(database)
    ops = [m.add_column("call", name, getattr(Call, name)) for name in PROVENANCE if name not in have]
    _migrate(*ops)  # commit and replay_of indexed, as the fields say


PROVENANCE = ("processor", "commit", "runtime", "replay_of")
MIGRATIONS: dict[int, Callable[[Database], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6,
                                                     6: _v6_to_v7, 7: _v7_to_v8, 8: _v8_to_v9, 9: _v9_to_v10,
                                                     10: _v10_to_v11}
_ = Processor  # the v2 column is declared on the model


def version(database: Database) -> int | None:
    """The store's schema version, or None when it has no ElasticCode tables.

    Every command asks, so the version is read straight away; only when that fails is the
    catalogue consulted (listing tables costs PostgreSQL a catalogue scan). Inside a
    transaction, which a failed statement would abort on PostgreSQL, the catalogue first."""
    query = SchemaVersion.select(SchemaVersion.version).order_by(SchemaVersion.version.desc())
    if database.in_transaction():
        if not database.table_exists(SchemaVersion._meta.table_name):
            return None
        row = query.first()
    else:
        try:
            row = query.first()
        except (ProgrammingError, OperationalError):
            if database.table_exists(SchemaVersion._meta.table_name):
                raise  # the table is there: a real problem (or the connection went)
            return None
    return row.version if row else None


def init(database: Database) -> bool:
    """Create every table at the current version; False if the schema already existed."""
    if version(database) is not None:
        return False
    from ..security import bootstrap

    with database.atomic():
        database.create_tables([*MODELS, *SCHEDULE_MODELS, *STREAM_MODELS, SchemaVersion])
        SchemaVersion.create(version=CURRENT)
        bootstrap()  # whoever creates the store is its admin
    return True


def ensure(database: Database) -> None:
    """Create the schema on first use; refuse an old or newer one with a clear message."""
    found = version(database)
    if found is None:
        init(database)
    elif found < CURRENT:
        raise UsageError(f"store schema is version {found}, this ec needs {CURRENT}: run 'ec db migrate'")
    elif found > CURRENT:
        raise UsageError(f"store schema is version {found}, newer than this ec ({CURRENT}): upgrade ec")


def upgrade(database: Database) -> list[int]:
    """Apply migrations up to :data:`CURRENT`; return the versions reached, in order."""
    found = version(database)
    if found is not None and found >= 3:  # users exist from v3 on
        from ..security import require

        require("DB_MIGRATE")
    if found is None:
        init(database)
        return [CURRENT]
    reached = []
    with foreign_keys_off(database):
        while found < CURRENT:
            with database.atomic():
                MIGRATIONS[found](database)
                SchemaVersion.update(version=found + 1).execute()
            found += 1
            reached.append(found)
    return reached


def drop(database: Database) -> None:
    """Drop every ElasticCode table (data included)."""
    from ..security import require

    if version(database) is not None:
        require("DB_DROP")
    with database.atomic():
        database.drop_tables([*MODELS, *SCHEDULE_MODELS, *STREAM_MODELS, SchemaVersion], safe=True, cascade=not isinstance(database, SqliteDatabase))
