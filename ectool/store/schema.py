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
from .models import MODELS, Call, JoinSlot, MinuteStat, Processor, SchemaVersion, Workflow

CURRENT = 5


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
    """v5: a processor's branch may be null (the repository's default branch, its HEAD, as
    ``git clone`` follows; it was "main" whatever the repository used), and it records the
    branch and commit an agent deployed. Existing branches keep their value."""
    m = _migrator(database)
    _migrate(
        m.drop_not_null("processor", "branch"),
        m.add_column("processor", "deployed_branch", Processor.deployed_branch),
        m.add_column("processor", "deployed_commit", Processor.deployed_commit),
    )


MIGRATIONS: dict[int, Callable[[Database], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}
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
        database.create_tables([*MODELS, SchemaVersion])
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
        database.drop_tables([*MODELS, SchemaVersion], safe=True, cascade=not isinstance(database, SqliteDatabase))
