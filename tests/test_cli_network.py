"""The network-building CLI: the seed's spellings, on both stores, in-process and as a
real subprocess; bad input gives one line and the right exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ectool.cli import COMMANDS, cli

SEED = [
    ["add", "queue", "-n", "pyfi.queue1", "-t", "direct"],
    ["add", "processor", "-n", "proc1", "-g", "https://github.com/radiantone/pyfi-processors",
     "-m", "pyfi.processors.sample"],
    ["add", "socket", "-n", "pyfi.processors.sample.do_something", "-q", "pyfi.queue1", "-pn", "proc1",
     "-t", "do_something", "-c", "5"],
    ["add", "socket", "-n", "pyfi.processors.sample.do_this", "-q", "pyfi.queue1", "-pn", "proc1",
     "-t", "do_this", "-c", "8"],
]


def invoke(db_url: str, *args: str):
    return CliRunner().invoke(cli, ["--db", db_url, *args])


def test_seed_sequence_in_process(db_url):
    for args in SEED:
        result = invoke(db_url, *args)
        assert result.exit_code == 0, result.output
    out = invoke(db_url, "ls", "processors", "--json")
    procs = json.loads(out.stdout)
    assert [p["name"] for p in procs] == ["proc1"]
    assert procs[0]["sockets"] == ["pyfi.processors.sample.do_something", "pyfi.processors.sample.do_this"]
    assert procs[0]["trusted"] is False
    sockets = json.loads(invoke(db_url, "ls", "sockets", "--json").stdout)
    assert {s["name"]: s["concurrency"] for s in sockets} == {
        "pyfi.processors.sample.do_something": 5, "pyfi.processors.sample.do_this": 8}


def test_seed_sequence_as_subprocess(db_url, tmp_path):
    env_args = [sys.executable, "-m", "ectool", "--db", db_url]
    for args in SEED:
        done = subprocess.run([*env_args, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if args[1] == "processor":
            assert "is not trusted yet" in done.stderr
    piped = subprocess.run([*env_args, "ls", "sockets"], capture_output=True, text=True, timeout=60)
    lines = piped.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["name", "processor", "task"]  # plain TSV when piped
    assert lines[1].split("\t")[:3] == ["pyfi.processors.sample.do_something", "proc1", "do_something"]


@pytest.mark.parametrize("args, code, message", [
    (["add", "queue", "-n", "pyfi.queue1"], 2, "already exists"),
    (["add", "socket", "-n", "s", "-q", "nope", "-pn", "proc1", "-t", "f"], 2, "no queue named 'nope'"),
    (["add", "socket", "-n", "s", "-q", "pyfi.queue1", "-pn", "nope", "-t", "f"], 2, "no processor named"),
    (["add", "processor", "-n", "p", "-g", "x"], 2, "Missing option"),
    (["add", "queue", "-n", "q2", "-t", "broadcast"], 2, "broadcast"),
    (["show", "processor", "ghost"], 2, "no processor named 'ghost'"),
    (["ls", "gizmos"], 2, "unknown kind"),
    (["delete", "processor", "proc1"], 2, "--cascade"),
    (["delete", "queue", "ghost"], 2, "no queue named"),
    (["update", "processor", "proc1", "concurrency"], 2, "FIELD=VALUE"),
    (["proc", "explode", "proc1"], 2, "explode"),
    (["db", "drop"], 2, "--yes"),
])
def test_bad_input_is_one_line(db_url, args, code, message):
    for seed in SEED[:3]:
        invoke(db_url, *seed)
    result = invoke(db_url, *args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    # nothing half-written: the network is unchanged
    assert len(json.loads(invoke(db_url, "ls", "sockets", "--json").stdout)) == 1


def test_unreachable_store_exit_3_as_subprocess():
    done = subprocess.run([sys.executable, "-m", "ectool", "--db", "postgresql://x@127.0.0.1:1/db?connect_timeout=1",
                           "ls", "processors"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.startswith("ec: store unreachable") and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("path", ["/proc/no-such-dir/ec.db", "/proc/ec.db"])
def test_unusable_sqlite_path_exit_3_on_one_line(path):
    done = subprocess.run([sys.executable, "-m", "ectool", "--db", f"sqlite:///{path}", "ls", "processors"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("ec: store unreachable") and done.stderr.count("\n") == 1, done.stderr


HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("CREATE TABLE other (x)")
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO other VALUES (1)")
print("locked", flush=True)
time.sleep(1.5)
conn.execute("COMMIT")
"""


def test_first_open_of_a_store_another_process_is_writing_waits(tmp_path):
    """Switching a new SQLite file to WAL fails at once while another connection writes it
    (no busy timeout applies); ec waits for the lock instead of exiting 3."""
    path = tmp_path / "ec.db"
    locker = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        done = subprocess.run([sys.executable, "-m", "ectool", "--db", f"sqlite:///{path}", "ls", "processors"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    finally:
        locker.kill()
        locker.wait()
        locker.stdout.close()


def test_bad_url_flag_exit_2():
    result = CliRunner().invoke(cli, ["--db", "mysql://x", "ls", "processors"])
    assert result.exit_code == 2 and "scheme must be one of" in result.output


def test_delete_cascade_update_and_proc_actions(db_url):
    for seed in SEED:
        invoke(db_url, *seed)
    assert invoke(db_url, "update", "processor", "proc1", "concurrency=3", "branch=dev").exit_code == 0
    assert invoke(db_url, "proc", "pause", "proc1").exit_code == 0
    row = json.loads(invoke(db_url, "show", "processor", "proc1", "--json").stdout)
    assert (row["concurrency"], row["branch"], row["requested_status"]) == (3, "dev", "paused")
    result = invoke(db_url, "delete", "processor", "proc1", "--cascade")
    assert result.exit_code == 0 and "deleted socket pyfi.processors.sample.do_this" in result.output
    assert json.loads(invoke(db_url, "ls", "sockets", "--json").stdout) == []


def test_trust_users_roles(db_url):
    assert invoke(db_url, "trust", "add", "https://github.com/radiantone/*").exit_code == 0
    for seed in SEED[:2]:
        assert "not trusted" not in invoke(db_url, *seed).output
    procs = json.loads(invoke(db_url, "ls", "processors", "--json").stdout)
    assert procs[0]["trusted"] is True
    assert invoke(db_url, "add", "role", "-n", "runner", "-p", "RUN_TASK", "-p", "READ_CALL").exit_code == 0
    assert invoke(db_url, "add", "user", "-n", "ann", "-r", "runner").exit_code == 0
    assert invoke(db_url, "add", "role", "-n", "bad", "-p", "FLY").exit_code == 2
    import getpass

    users = [u["name"] for u in json.loads(invoke(db_url, "ls", "users", "--json").stdout)]
    creator = "postgres" if db_url.startswith("postgresql") else getpass.getuser()
    assert sorted(users) == sorted(["ann", creator])  # the store's creator is its admin
    assert invoke(db_url, "trust", "rm", "https://github.com/radiantone/*").exit_code == 0
    assert json.loads(invoke(db_url, "trust", "ls", "--json").stdout) == []


def test_db_commands(db_url):
    assert invoke(db_url, "db", "init").exit_code == 0
    from ectool.store.schema import CURRENT

    assert invoke(db_url, "db", "version").output.strip() == str(CURRENT)
    assert invoke(db_url, "db", "migrate").exit_code == 0
    assert invoke(db_url, "db", "drop", "--yes").exit_code == 0
    assert invoke(db_url, "db", "version").output.strip() == ""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_help_is_light():
    """`ec --help` imports no heavy modules (tests/test_import_budget.py pins the rest)."""
    code = ("import sys; from ectool.cli import cli; "
            "heavy=[m for m in ('textual','pika','git','peewee','rich','psutil') if m in sys.modules]; "
            "print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout
    assert subprocess.run([sys.executable, "-m", "ectool", "--help"], capture_output=True).returncode == 0
