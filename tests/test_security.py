"""Security: privileges enforced in the library (exit 5, nothing changed), identity from
the database login on PostgreSQL, no pickle/eval on any path, secrets never printed."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from ectool.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def as_user(db_url: str, user: str, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--db", db_url, *args], env={"EC_USER": user}, input=input)


def test_creator_is_admin_and_others_need_privileges(tmp_path):
    db = f"sqlite:///{tmp_path / 'ec.db'}"
    assert as_user(db, "alice", "db", "init").exit_code == 0
    assert as_user(db, "alice", "add", "queue", "-n", "q1").exit_code == 0
    denied = as_user(db, "bob", "add", "queue", "-n", "q2")
    assert denied.exit_code == 5
    assert "user 'bob' lacks ADD_QUEUE" in denied.output and "Traceback" not in denied.output
    assert as_user(db, "bob", "ls", "queues").exit_code == 5
    assert as_user(db, "bob", "db", "drop", "--yes").exit_code == 5
    assert as_user(db, "bob", "trust", "add", "*").exit_code == 5
    # nothing changed by the denied attempts
    names = [q["name"] for q in __import__("json").loads(as_user(db, "alice", "ls", "queues", "--json").stdout)]
    assert names == ["q1"]
    assert as_user(db, "alice", "add", "role", "-n", "reader", "-p", "READ_QUEUE").exit_code == 0
    assert as_user(db, "alice", "add", "user", "-n", "bob", "-r", "reader").exit_code == 0
    assert as_user(db, "bob", "ls", "queues").exit_code == 0
    assert as_user(db, "bob", "add", "queue", "-n", "q3").exit_code == 5


def test_run_task_needs_its_privilege(tmp_path):
    db = f"sqlite:///{tmp_path / 'ec.db'}"
    broker = f"sqlite:///{tmp_path / 'queue.db'}"
    for args in (["add", "queue", "-n", "q"], ["add", "processor", "-n", "p", "-g", "/nowhere", "-m", "m"],
                 ["add", "socket", "-n", "s", "-q", "q", "-pn", "p", "-t", "f"]):
        assert as_user(db, "alice", *args).exit_code == 0
    denied = CliRunner().invoke(cli, ["--db", db, "--broker", broker, "run", "--no-wait", "s", "1"],
                                env={"EC_USER": "mallory"})
    assert denied.exit_code == 5 and "RUN_TASK" in denied.output
    allowed = CliRunner().invoke(cli, ["--db", db, "--broker", broker, "run", "--no-wait", "s", "1"],
                                 env={"EC_USER": "alice"})
    assert allowed.exit_code == 0 and len(allowed.stdout.strip()) == 36


def test_postgres_identity_is_the_login_role(pg_url):
    import psycopg2
    from conftest import PG_URL

    role = f"ec_bob_{uuid.uuid4().hex[:6]}"
    schema = pg_url.split("schema=")[1]
    assert as_user(pg_url, "whoever", "db", "init").exit_code == 0  # admin: the URL's user (postgres)
    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f"CREATE ROLE {role} LOGIN")
    try:
        cur.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        cur.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}")
        cur.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
        bob_url = pg_url.replace("postgres@", f"{role}@", 1)
        denied = as_user(bob_url, "postgres", "add", "queue", "-n", "q")  # EC_USER cannot impersonate
        assert denied.exit_code == 5 and f"user '{role}' lacks ADD_QUEUE" in denied.output
        assert as_user(pg_url, "x", "add", "queue", "-n", "q").exit_code == 0
    finally:
        from ectool.store import close_store

        close_store()
        cur.execute(f"REASSIGN OWNED BY {role} TO postgres")
        cur.execute(f"DROP OWNED BY {role}")
        cur.execute(f"DROP ROLE {role}")
        conn.close()


def test_no_pickle_eval_or_exec_in_the_code():
    pattern = re.compile(r"\b(import|from) (pickle|marshal|shelve)\b|\b(pickle|marshal)\.|(?<![\w.])(eval|exec)\(")
    offenders = []
    for path in [*ROOT.glob("ectool/**/*.py"), *ROOT.glob("agentd/**/*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders


@pytest.mark.parametrize("args, secret", [
    (["--db", "postgresql://u:s3cretpw@127.0.0.1:1/db?connect_timeout=1", "ls", "queues"], "s3cretpw"),
    (["--broker", "amqp://guest:s3cretpw@127.0.0.1:1/%2F", "run", "--no-wait", "x"], "s3cretpw"),
    (["--broker", "amqp://guest:s3cretpw@127.0.0.1:1/%2F", "config", "show"], "s3cretpw"),
])
def test_credentials_are_never_printed(args, secret, tmp_path):
    done = subprocess.run([sys.executable, "-m", "ectool", *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "EC_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert secret not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_node_state_changes_need_update_node(tmp_path):
    from ectool import network
    from ectool.store import open_store

    db = f"sqlite:///{tmp_path / 'ec.db'}"
    assert as_user(db, "alice", "add", "node", "-n", "h1").exit_code == 0
    for action in ("cordon", "drain", "uncordon"):
        denied = as_user(db, "bob", "node", action, "h1")
        assert denied.exit_code == 5 and "lacks UPDATE_NODE" in denied.output, denied.output
    assert as_user(db, "bob", "ls", "nodes").exit_code == 5  # READ_NODE
    open_store(db, user="alice")
    assert network.get("node", "h1").state == "schedulable"  # nothing changed
    assert as_user(db, "alice", "add", "role", "-n", "ops", "-p", "UPDATE_NODE", "-p", "READ_NODE").exit_code == 0
    assert as_user(db, "alice", "add", "user", "-n", "bob", "-r", "ops").exit_code == 0
    assert as_user(db, "bob", "node", "cordon", "h1").exit_code == 0
    assert [(n["name"], n["state"]) for n in __import__("json").loads(
        as_user(db, "bob", "ls", "nodes", "--json").stdout)] == [("h1", "offline")]
    assert network.get("node", "h1").state == "cordoned"
