"""PostgreSQL rights that follow ElasticCode privileges, so ``psql`` cannot do what ``ec`` refuses.

On PostgreSQL an ec user is the database role of the same name (the session user, see
:mod:`ectool.security`). :func:`rights` (pure) maps the user's privileges to table rights;
:func:`sync` makes the role hold exactly those on the store's tables (REVOKE ALL, then
GRANT), and USAGE on the sequences of the tables it may insert into. ``ec add user``,
``ec delete user|role|privilege`` and ``ec db grant`` call it. Only a role that may grant
(the tables' owner, i.e. whoever ran ``ec db init``, or a superuser) can: otherwise the
store is left as it is and a note says so.

Row-level security is not needed: no table holds rows that belong to one user (calls,
workers and agents are the network's, read by whoever holds READ_CALL, ...), so table
rights are the whole of it. Schema changes (``DB_INIT``, ``DB_MIGRATE``, ``DB_DROP``) need
the tables' owner: PostgreSQL cannot grant DDL on a table. The embedded SQLite store has no
such rights: there privileges are only as strong as the file's permissions.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import MODELS, SchemaVersion, db, on_sqlite
from .schedules import SCHEDULE_MODELS
from .streams import STREAM_MODELS

R, INS, U, D = "SELECT", "INSERT", "UPDATE", "DELETE"
ALL = frozenset((R, INS, U, D))
TABLES = tuple(m._meta.table_name for m in (*MODELS, *SCHEDULE_MODELS, *STREAM_MODELS, SchemaVersion))  # type: ignore[attr-defined]
#: everyone reads who may do what (every privilege check does) and the schema version
BASE = {t: {R} for t in ("user", "role", "privilege", "user_role", "role_privilege", "ec_schema")}
#: the tables behind each object kind's READ_/ADD_/UPDATE_/DELETE_ privileges
KIND_TABLES = {
    "NODE": ("node",), "AGENT": ("agent", "placement"), "PROCESSOR": ("processor", "placement"),
    "SOCKET": ("socket",), "QUEUE": ("queue",), "PLUG": ("plug",), "WORKER": ("worker",),
    "CALL": ("call", "workflow", "join_slot", "event", "minute_stat", "stream", "stream_line"), "USER": ("user", "user_role"),
    "ROLE": ("role", "role_privilege"), "PRIVILEGE": ("privilege", "role_privilege"), "TRUST": ("trust",),
    "SCHEDULE": ("schedule", "schedule_tick", "named_workflow"),
}
VERBS = {"READ": {R}, "ADD": {R, INS}, "UPDATE": {R, U}, "DELETE": {R, D}}
_NETWORK = {"socket": {R}, "queue": {R}, "processor": {R}, "plug": {R}}
ACTION_TABLES: dict[str, dict[str, set[str]]] = {
    "RUN_TASK": {**_NETWORK, "call": {R, INS, U}, "workflow": {R, INS}, "join_slot": {R, INS, D}, "event": {INS},
                 "stream": {R, INS, U, D}, "stream_line": {R, INS, D}},  # a finished stream's name is reused
    "CANCEL_TASK": {"call": {R, U}, "event": {INS}},
    "START_PROCESSOR": {"processor": {R, U}},
    "STOP_PROCESSOR": {"processor": {R, U}},
    "PAUSE_PROCESSOR": {"processor": {R, U}},
    "TRUST_REPOSITORY": {"trust": {R, INS, D}},
}


def rights(privileges: Iterable[str] | None) -> dict[str, frozenset[str]]:
    """Table -> rights for a user holding ``privileges`` ({"*"}: an admin; None: not a
    user of the store, which gets nothing)."""
    if privileges is None:
        return {}
    held = set(privileges)
    if "*" in held:
        return {t: ALL for t in TABLES}
    out: dict[str, set[str]] = {t: set(r) for t, r in BASE.items()}
    for priv in held:
        verb, _, kind = priv.partition("_")
        grants = ({t: VERBS[verb] for t in KIND_TABLES[kind]} if verb in VERBS and kind in KIND_TABLES
                  else ACTION_TABLES.get(priv, {}))
        for table, what in grants.items():
            out.setdefault(table, set()).update(what)
    return {t: frozenset(r) for t, r in out.items() if r}


def statements(role: str, schema: str, wanted: dict[str, frozenset[str]],
               sequences: dict[str, str]) -> list[str]:
    """The SQL giving ``role`` exactly ``wanted`` on the store's tables in ``schema``
    (``sequences``: table -> its id sequence, for the tables that have one)."""
    who = quote(role)
    out = [f"GRANT USAGE ON SCHEMA {quote(schema)} TO {who}",
           f"REVOKE ALL ON TABLE {', '.join(quote(t) for t in TABLES)} FROM {who}"]
    if sequences:
        out.append(f"REVOKE ALL ON SEQUENCE {', '.join(quote(s) for s in sorted(sequences.values()))} FROM {who}")
    for table in TABLES:
        what = wanted.get(table)
        if not what:
            continue
        out.append(f"GRANT {', '.join(sorted(what))} ON TABLE {quote(table)} TO {who}")
        if INS in what and table in sequences:
            out.append(f"GRANT USAGE ON SEQUENCE {quote(sequences[table])} TO {who}")
    return out


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sync(users: Iterable[str]) -> list[str]:
    """Give each user's PostgreSQL role exactly the rights its privileges imply; return
    notes for people (a role that does not exist, rights this role may not grant)."""
    from ..security import privileges_of

    if on_sqlite() or db.obj is None:
        return []
    database = db.obj
    names = sorted(set(users))
    if not names:
        return []

    def one(sql: str, *params):
        return database.execute_sql(sql, params).fetchone()

    schema = one("SELECT current_schema()")[0]
    if not one("SELECT has_table_privilege(current_user, %s, 'SELECT WITH GRANT OPTION')",
               f"{quote(schema)}.{quote('user')}")[0]:
        return [f"database rights of {', '.join(names)} unchanged: role {one('SELECT current_user')[0]!r} "
                "may not grant them (the tables' owner, who ran ec db init, can: ec db grant)"]
    sequences = {}
    for table in TABLES:
        seq = one("SELECT pg_get_serial_sequence(%s, 'id')", f"{quote(schema)}.{quote(table)}")
        if seq and seq[0]:
            sequences[table] = seq[0].split(".", 1)[-1].strip('"')
    notes = []
    with database.atomic():
        for name in names:
            row = one("SELECT rolsuper, pg_has_role(rolname, %s, 'MEMBER') FROM pg_roles WHERE rolname = %s",
                      one("SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'user'",
                          schema)[0], name)
            if row is None:
                notes.append(f"no PostgreSQL role {name!r}: create it (CREATE ROLE {quote(name)} LOGIN), "
                             f"then run ec db grant {name}")
                continue
            if row[0] or row[1]:
                continue  # a superuser, or the tables' owner: holds everything whatever is granted
            from .models import User

            held = privileges_of(name) if User.select().where(User.name == name).exists() else None
            for sql in statements(name, schema, rights(held), sequences):
                database.execute_sql(sql)
    return notes
