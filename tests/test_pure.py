"""Pure logic: argument parsing, retry backoff, restart delays, message envelope."""

from __future__ import annotations

import random

import pytest

from ectool.arguments import parse_data, parse_kwargs, parse_word, stdin_value
from ectool.backoff import restart_delay
from ectool.errors import UsageError
from ectool.messages import BadMessage, CallMessage, decode, peek_id
from ectool.worker.retry import backoff_delay, should_retry


@pytest.mark.parametrize("word, value", [
    ("3", 3), ("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}), ('"x"', "x"), ("hello", "hello"),
    ("null", None), ("1e3", 1000.0), ("HI THERE!", "HI THERE!"),
])
def test_parse_word(word, value):
    assert parse_word(word) == value


@pytest.mark.parametrize("data, args, kwargs", [
    ("['some data']", ["some data"], {}),
    ('["a", 2]', ["a", 2], {}),
    ("{'x': 1}", [], {"x": 1}),
    ("(1, 2)", [1, 2], {}),
    ("42", [42], {}),
    ("plain words", ["plain words"], {}),
    ("__import__('os').system('echo pwned')", ["__import__('os').system('echo pwned')"], {}),
])
def test_parse_data_is_literal_only(data, args, kwargs):
    assert parse_data(data) == (args, kwargs)


def test_parse_data_rejects_non_string_keys():
    with pytest.raises(UsageError):
        parse_data("{1: 2}")


def test_stdin_value():
    assert stdin_value(b"HI THERE!\n") == "HI THERE!"
    assert stdin_value(b"a\nb\n\n") == "a\nb\n"
    assert stdin_value(b"\xff\xfe") == b"\xff\xfe"


def test_parse_kwargs():
    assert parse_kwargs(("a=1", "b=x")) == {"a": 1, "b": "x"}
    with pytest.raises(UsageError):
        parse_kwargs(("nope",))
    with pytest.raises(UsageError):
        parse_kwargs(("1a=2",))


@pytest.mark.parametrize("attempt, base, low, high", [
    (0, 1.0, 0, 0), (1, 1.0, 0.5, 1.0), (2, 1.0, 1.0, 2.0), (3, 0.5, 1.0, 2.0), (30, 1.0, 150, 300),
    (1, 0.0, 0, 0),
])
def test_backoff_bounds(attempt, base, low, high):
    rng = random.Random(7)
    for _ in range(50):
        assert low <= backoff_delay(attempt, base, rand=rng) <= high


def test_should_retry():
    assert [should_retry(a, 2) for a in (1, 2, 3)] == [True, True, False]
    assert not should_retry(1, 0)


def test_restart_delay_grows_and_caps():
    assert [restart_delay(n) for n in range(5)] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert restart_delay(50) == 30.0


def test_message_round_trip_with_bytes():
    m = CallMessage(id="i", socket="s", task="t", args=[b"\xff\x00", [b"x"]], kwargs={"k": b"v"}, root="i")
    back = decode(m.encode())
    assert back.args == [b"\xff\x00", [b"x"]] and back.kwargs == {"k": b"v"}
    assert back.attempt == 1 and back.next_attempt().attempt == 2


def test_message_size_limit():
    m = CallMessage(id="i", socket="s", task="t", args=["x" * 1000])
    with pytest.raises(UsageError, match="over the limit"):
        m.encode(max_bytes=500)


def test_message_not_json_serialisable():
    with pytest.raises(UsageError):
        CallMessage(id="i", socket="s", task="t", args=[object()]).encode()


@pytest.mark.parametrize("body", [
    b"", b"\xff\xfe", b"[]", b"{}", b'{"v": 99}', b'{"v": 1, "id": 3}',
    b'{"v":1,"id":"x","socket":"s","task":"t","args":{},"kwargs":{},"attempt":1}',
    b'{"v":1,"id":"x","socket":"s","task":"t","args":[{"$bytes":"!!"}],"kwargs":{},"attempt":1}',
])
def test_decode_rejects_garbage(body):
    with pytest.raises(BadMessage):
        decode(body)


def test_peek_id():
    assert peek_id(b'{"id": "abc"}') == "abc"
    assert peek_id(b"garbage") is None
    assert peek_id(b'{"id": "first"}\n{"id": "second"}') == "first"  # a bundle: its first call


@pytest.mark.parametrize("argv, expected", [
    (["run", "add_two", "3", "10"], ("add_two", ["3", "10"])),
    (["run", "echo"], ("echo", [])),
    (["run", "echo", "-"], ("echo", ["-"])),
    (["run", "s", "a b", "[1, 2]"], ("s", ["a b", "[1, 2]"])),
    (["run"], None),                                   # click says what is missing
    (["run", "--help"], None),
    (["run", "s", "--json"], None),
    (["run", "s", "--", "-5"], None),
    (["run", "s", "-k", "a=1"], None),
    (["--db", "sqlite:///x", "run", "s"], None),
    (["map", "s"], None),
    ([], None),
    (["run", "", "x"], None),
])
def test_the_fast_path_takes_only_the_plain_run_form(argv, expected):
    from ectool.cli.fast import simple_run

    assert simple_run(argv, {}) == expected


def test_the_fast_path_leaves_completion_to_click():
    from ectool.cli.fast import simple_run

    assert simple_run(["run", "s"], {"_EC_COMPLETE": "bash_complete"}) is None


def test_peewee_without_server_drivers_hides_them_only_while_it_imports():
    """A SQLite-only process imports peewee without psycopg2; psycopg2 is importable after."""
    import subprocess
    import sys

    code = ("import sys\nfrom ectool.peewee_lean import import_without_servers as f\nf()\n"
            "import peewee\nprint(peewee.psycopg2 is None, 'psycopg2' in sys.modules, "
            "isinstance(peewee.SqliteDatabase(':memory:').execute_sql('select 1').fetchone(), tuple))\n"
            "import psycopg2\nprint(psycopg2.__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["True False True", "psycopg2"], done.stderr


def test_peewee_is_imported_lean_only_by_the_ec_command_on_a_sqlite_store():
    import subprocess
    import sys

    code = ("import sys\nfrom ectool import peewee_lean as p\n"
            "p.store_known('sqlite:///x.db'); print('peewee' in sys.modules)\n"  # a library user: untouched
            "p.lean = True; p.store_known('postgresql://h/db'); print('peewee' in sys.modules)\n"
            "p.store_known('sqlite:///x.db'); print('peewee' in sys.modules, 'psycopg2' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["False", "False", "True False"], done.stderr


@pytest.mark.parametrize("argv, lean", [
    (["run", "s"], True), (["map", "s"], True), (["--db", "sqlite:///x", "ls", "sockets"], True), ([], True),
    (["worker", "-p", "p"], False), (["--db", "sqlite:///x", "--broker", "b", "worker"], False),
    (["--db=sqlite:///x", "worker"], False),
])
def test_only_commands_that_run_no_tasks_import_peewee_lean(argv, lean):
    from ectool.peewee_lean import lean_for

    assert lean_for(argv) is lean


def test_a_worker_leaves_peewee_whole_for_the_tasks_it_runs_in_process(tmp_path):
    """A task may use peewee with a PostgreSQL database of its own."""
    import os
    import subprocess
    import sys

    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print(sys.modules['peewee'].psycopg2 is not None, file=sys.stderr))\n"
             "from ectool.cli import main\nmain(sys.argv[1:])\n")
    env = dict(os.environ, EC_DB=f"sqlite:///{tmp_path / 'ec.db'}", EC_BROKER=f"sqlite:///{tmp_path / 'q.db'}")
    worker = subprocess.run([sys.executable, "-c", probe, "worker", "-p", "nope"], env=env, capture_output=True,
                            text=True, timeout=60)
    run = subprocess.run([sys.executable, "-c", probe, "run", "nope"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert worker.returncode == run.returncode == 2, (worker.stderr, run.stderr)
    assert worker.stderr.splitlines()[-1] == "True" and run.stderr.splitlines()[-1] == "False"


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_arguments_nested_too_deeply_are_usage_errors_not_tracebacks():
    """A hostile or careless word (100,000 brackets) is a one-line usage error, whether it
    is too deep to parse or deep enough to parse but not to serialise."""
    from ectool.messages import CallEncoder

    with pytest.raises(UsageError, match="nested too deeply"):
        parse_word(deep(100_000))
    with pytest.raises(UsageError, match="nested too deeply"):
        parse_data(deep(100_000))
    with pytest.raises(UsageError, match="nested too deeply"):
        CallEncoder("s", "t").encode("id", "id", [parse_word(deep(600))], {})
    assert parse_word(deep(3)) == [[[]]]


def test_a_message_nested_too_deeply_is_a_bad_message():
    """A worker must bury such a message (BadMessage), not crash on it."""
    body = b'{"v": 1, "id": "x", "socket": "s", "task": "t", "args": ' + deep(100_000).encode() + b"}"
    with pytest.raises(BadMessage, match="nested too deeply"):
        decode(body)
    assert peek_id(body) is None


def test_a_result_nested_too_deeply_fails_the_call_once():
    import types

    from ectool.worker import shim

    m = types.ModuleType("m")

    def nest(n):
        value = []
        for _ in range(n):
            value = [value]
        return value

    m.nest = nest
    out = shim.run_call(m, "nest", [5000], {}, None)
    assert out["status"] == "failed" and out["error_type"] == "ValueError" and out.get("final") is True, out
    assert shim.run_call(m, "nest", [2], {}, None)["result"] == "[[[]]]"


@pytest.mark.parametrize("text, expected", [
    ("10m", 600), ("1.5h", 5400), ("99999999d", None), ("-5m", UsageError), ("nan", UsageError),
    ("1e400d", UsageError), ("5x", UsageError), ("", UsageError),
])
def test_since_takes_a_duration_ago_and_refuses_nonsense(text, expected):
    import datetime as dt

    from ectool.calls import parse_since
    from ectool.store.models import now

    if expected is UsageError:
        with pytest.raises(UsageError):
            parse_since(text)
        return
    since = parse_since(text)
    if expected is None:  # longer ago than datetime reaches: everything
        assert since == dt.datetime.min
    else:
        assert abs((now() - since).total_seconds() - expected) < 5


def test_replies_pack_per_inbox_in_order_within_the_size_limit():
    from ectool.transport.base import pack_replies, unpack_replies

    replies = [("a", b"1" * 40), ("b", b"x"), ("a", b"2" * 40), ("a", b"3" * 40), ("a", b"4" * 100)]
    packed = pack_replies(replies, limit=90)
    assert packed == [("a", b"1" * 40 + b"\n" + b"2" * 40), ("a", b"3" * 40), ("a", b"4" * 100), ("b", b"x")]
    assert [b for _, m in packed if _ == "a" for b in unpack_replies(m)] == [b"1" * 40, b"2" * 40, b"3" * 40,
                                                                            b"4" * 100]
    assert unpack_replies(b"single") == [b"single"]


def _may(*missing: str) -> dict[str, bool]:
    from ectool.dash.data import READS

    return {kind: kind not in missing for kind in READS}


@pytest.mark.parametrize("missing, hidden", [
    ((), []),
    (("CALL",), []),                                  # figures zeroed, lists kept
    (("SOCKET",), ["processors"]),                    # a processor row lists its sockets
    (("PROCESSOR",), ["processors"]),
    (("AGENT",), ["agents"]),                         # hosts still come from workers
    (("AGENT", "WORKER"), ["agents", "workers", "hosts"]),
    (("QUEUE", "PLUG", "NODE"), ["queues", "plugs", "nodes"]),
])
def test_dashboard_hides_what_may_not_be_read(missing, hidden):
    from ectool.dash.data import hidden as hide

    assert sorted(hide(_may(*missing))) == sorted(hidden)
