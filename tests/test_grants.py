"""PostgreSQL rights follow ElasticCode privileges: the pure mapping (table-driven), then a
real role that, with psql, can do exactly what ec lets it."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from ectool.cli import cli
from ectool.store.grants import ALL, BASE, TABLES, rights, statements

S, INS, U, D = "SELECT", "INSERT", "UPDATE", "DELETE"


@pytest.mark.parametrize("privileges, expected", [
    (None, {}),  # not a user of the store: nothing
    (set(), {t: {S} for t in BASE}),  # a user with no privilege reads only who may do what
    ({"READ_QUEUE"}, {**{t: {S} for t in BASE}, "queue": {S}}),
    ({"ADD_QUEUE", "DELETE_QUEUE"}, {**{t: {S} for t in BASE}, "queue": {S, INS, D}}),
    ({"TRUST_REPOSITORY"}, {**{t: {S} for t in BASE}, "trust": {S, INS, D}}),
    ({"UPDATE_PROCESSOR"}, {**{t: {S} for t in BASE}, "processor": {S, U}, "placement": {S, U}}),
    ({"START_PROCESSOR", "STOP_PROCESSOR"}, {**{t: {S} for t in BASE}, "processor": {S, U}}),
    ({"RUN_TASK"}, {**{t: {S} for t in BASE}, "socket": {S}, "queue": {S}, "processor": {S}, "plug": {S},
                    "call": {S, INS, U}, "workflow": {S, INS}, "join_slot": {S, INS, D}, "event": {INS},
                    "stream": {S, INS, U, D}, "stream_line": {S, INS, D}}),  # ec map --name, ec attach
    ({"READ_CALL", "DELETE_CALL"}, {**{t: {S} for t in BASE}, **{t: {S, D} for t in (
        "call", "workflow", "join_slot", "event", "minute_stat", "stream", "stream_line")}}),
    ({"DB_MIGRATE"}, {t: {S} for t in BASE}),  # DDL needs the tables' owner: nothing to grant
    ({"*"}, {t: set(ALL) for t in TABLES}),  # admin
])
def test_rights_follow_privileges(privileges, expected):
    assert {t: set(r) for t, r in rights(privileges).items()} == expected


def test_statements_revoke_everything_then_grant_what_is_wanted():
    sql = statements('bo"b', "s1", {"queue": frozenset({INS, S}), "call": frozenset({S})},
                     {"queue": "queue_id_seq", "node": "node_id_seq"})
    assert sql[0] == 'GRANT USAGE ON SCHEMA "s1" TO "bo""b"'
    assert sql[1].startswith('REVOKE ALL ON TABLE "node", ') and '"user"' in sql[1]
    assert sql[2] == 'REVOKE ALL ON SEQUENCE "node_id_seq", "queue_id_seq" FROM "bo""b"'
    assert sql[3:] == ['GRANT INSERT, SELECT ON TABLE "queue" TO "bo""b"',
                       'GRANT USAGE ON SEQUENCE "queue_id_seq" TO "bo""b"',
                       'GRANT SELECT ON TABLE "call" TO "bo""b"']


@pytest.fixture
def roles(pg_url):
    """Two fresh PostgreSQL login roles (no rights), dropped with whatever they got."""
    import psycopg2
    from conftest import PG_URL

    names = [f"ec_g_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    cur = conn.cursor()
    for name in names:
        cur.execute(f"CREATE ROLE {name} LOGIN")
    try:
        yield names
    finally:
        from ectool.store import close_store

        close_store()
        for name in names:
            cur.execute(f"DROP OWNED BY {name}")
            cur.execute(f"DROP ROLE {name}")
        conn.close()


def ec(url, *args):
    return CliRunner().invoke(cli, ["--db", url, *args])


def psql(url: str, role: str, sql: str):
    """Run SQL as ``role`` with psycopg2 (what a user with psql could do); the error class
    name or the rows."""
    import psycopg2
    from psycopg2 import errors

    schema = url.split("schema=")[1]
    conn = psycopg2.connect(url.split("?")[0].replace("postgres@", f"{role}@", 1),
                            options=f"-c search_path={schema}")
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall() if cur.description else "ok"
    except errors.InsufficientPrivilege:
        return "denied"
    finally:
        conn.close()


def test_a_role_holds_only_the_rights_its_privileges_imply(pg_url, roles):
    reader, adder = roles
    as_reader = pg_url.replace("postgres@", f"{reader}@", 1)
    assert ec(pg_url, "db", "init").exit_code == 0
    assert ec(pg_url, "add", "queue", "-n", "q1").exit_code == 0
    assert ec(pg_url, "add", "role", "-n", "readers", "-p", "READ_QUEUE").exit_code == 0
    assert ec(pg_url, "add", "role", "-n", "adders", "-p", "READ_QUEUE", "-p", "ADD_QUEUE").exit_code == 0
    for user, role in ((reader, "readers"), (adder, "adders")):
        added = ec(pg_url, "add", "user", "-n", user, "-r", role)
        assert added.exit_code == 0 and "note" not in added.output, added.output
    # ec and psql agree: the reader reads queues and adds nothing, anywhere
    assert json.loads(ec(as_reader, "ls", "queues", "--json").stdout)[0]["name"] == "q1"
    assert ec(as_reader, "add", "queue", "-n", "q2").exit_code == 5
    assert psql(pg_url, reader, "SELECT name FROM queue") == [("q1",)]
    assert psql(pg_url, reader, "INSERT INTO queue (name, type, durable, queue_type, created, updated) "
                                "VALUES ('evil', 'direct', true, 'quorum', now(), now())") == "denied"
    assert psql(pg_url, reader, "INSERT INTO trust (pattern, created, updated) VALUES ('*', now(), now())") == "denied"
    assert psql(pg_url, reader, "UPDATE user_role SET role_id = role_id") == "denied"
    assert psql(pg_url, reader, "SELECT count(*) FROM call") == "denied"
    # the adder may insert queues (its sequence too), with ec as with psql
    as_adder = pg_url.replace("postgres@", f"{adder}@", 1)
    assert ec(as_adder, "add", "queue", "-n", "q2").exit_code == 0
    assert psql(pg_url, adder, "INSERT INTO queue (name, type, durable, queue_type, created, updated) "
                               "VALUES ('q3', 'direct', true, 'quorum', now(), now())") == "ok"
    assert psql(pg_url, adder, "DELETE FROM queue") == "denied"
    # a user deleted from ec loses its database rights
    assert ec(pg_url, "delete", "user", reader).exit_code == 0
    assert psql(pg_url, reader, "SELECT name FROM queue") == "denied"
    # ec db grant puts them back once it is a user again
    assert ec(pg_url, "add", "user", "-n", reader, "-r", "readers").exit_code == 0
    assert ec(pg_url, "db", "grant").exit_code == 0
    assert psql(pg_url, reader, "SELECT count(*) FROM queue") == [(3,)]


def test_a_user_without_a_database_role_gets_a_note(pg_url):
    assert ec(pg_url, "db", "init").exit_code == 0
    added = ec(pg_url, "add", "user", "-n", f"nobody_{uuid.uuid4().hex[:6]}")
    assert added.exit_code == 0
    assert "no PostgreSQL role" in added.output and "CREATE ROLE" in added.output


def test_a_runner_records_named_streams_and_a_reader_only_reads_them(pg_url, roles):
    """ec map --name as a user holding RUN_TASK: the stream, its lines and the reuse of a
    finished stream's name; READ_CALL reads them and writes nothing."""
    from ectool.journal import Journal
    from ectool.store import open_store, streams

    runner, reader = roles
    assert ec(pg_url, "db", "init").exit_code == 0
    assert ec(pg_url, "add", "role", "-n", "runners", "-p", "RUN_TASK").exit_code == 0
    assert ec(pg_url, "add", "role", "-n", "readers", "-p", "READ_CALL").exit_code == 0
    assert ec(pg_url, "add", "user", "-n", runner, "-r", "runners").exit_code == 0
    assert ec(pg_url, "add", "user", "-n", reader, "-r", "readers").exit_code == 0
    open_store(pg_url.replace("postgres@", f"{runner}@", 1))
    for _ in range(2):  # the second replaces the first, finished
        journal = Journal.start("s", "sock", "{}", None)
        journal.store_lines(1, [b"a\n", b"b\n"], eof=True)
        journal.submitted(2)
        journal.close("finished")
    assert [(r.name, r.read, r.sent, r.state) for r in streams.select()] == [("s", 2, 2, "finished")]
    assert psql(pg_url, reader, "SELECT name, read FROM stream") == [("s", 2)]
    assert psql(pg_url, reader, "SELECT count(*) FROM stream_line") == [(2,)]
    assert psql(pg_url, reader, "DELETE FROM stream_line") == "denied"
    assert psql(pg_url, reader, "UPDATE stream SET state = 'running'") == "denied"
