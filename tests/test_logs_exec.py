"""Call logs (`ec logs`, `--stderr`) and script processors (`--runtime exec`), end to end
with real worker processes on both transports, and a script processor deployed by the agent."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from helpers import agent, build_network, ec, env_for, make_repo, wait_for, workers

PY_SOCKETS = {"do_something": ("do_something", {}), "say": ("say", {}), "noop": ("noop", {})}
SCRIPT_SOCKETS = {"wc": "bin/wordcount.sh", "fail": "bin/fail.sh", "snooze": "bin/sleep.sh"}


def cleanup(broker_url: str, names) -> None:
    if broker_url.startswith("amqp"):
        from ectool.calls import broker_queue
        from ectool.transport import connect

        with connect(broker_url) as t:
            for name in names:
                t.delete_queue(broker_queue(name, os.environ["EC_NAMESPACE"]))


def submit(env, build) -> str:
    """Submit the workflow ``build(ectool.api)`` to the store and broker of ``env``; its id."""
    from ectool import api

    saved = {k: os.environ.get(k) for k in ("EC_DB", "EC_BROKER")}
    os.environ.update(EC_DB=env["EC_DB"], EC_BROKER=env["EC_BROKER"])
    try:
        return build(api).delay().id
    finally:
        api.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def net(tmp_path, broker_url):
    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    repo = make_repo(tmp_path / "repo")
    proc = f"sample-{uuid.uuid4().hex[:6]}"
    build_network(db_url, repo, processor=proc, sockets=PY_SOCKETS)
    from ectool import network

    network.add_processor(f"{proc}-sh", f"file://{repo}", "", runtime="exec")
    for name, path in SCRIPT_SOCKETS.items():
        network.add_socket(name, "q", f"{proc}-sh", path, **({"timeout": 1.0} if name == "snooze" else {}))
    network.add_socket("fail_retried", "q", f"{proc}-sh", "bin/fail.sh", retries=1, backoff=0.05)
    env = env_for(db_url, broker_url)
    yield env, proc
    cleanup(broker_url, [*PY_SOCKETS, *SCRIPT_SOCKETS, "fail_retried"])


def test_call_logs_are_kept_and_streamed(net):
    env, proc = net
    with workers(env, proc):
        done = ec("run", "do_something", "x", "--json", env=env)
        assert done.returncode == 0, done.stderr
        cid = json.loads(done.stdout)["id"]
        logs = ec("logs", cid, env=env)
        assert (logs.returncode, logs.stdout) == (0, "do_something got 1 argument(s)\n"), logs.stderr
        shown = ec("run", "say", "hello", "--stderr", env=env)
        assert (shown.returncode, shown.stdout) == (0, "HELLO\n"), shown.stderr
        assert "say: hello\n" in shown.stderr
        quiet = ec("run", "say", "hello", env=env)
        assert "say: hello" not in quiet.stderr
        mapped = ec("map", "say", "--stderr", env=env, input="a\nb\n")
        assert mapped.stdout == "A\nB\n" and "say: a\n" in mapped.stderr and "say: b\n" in mapped.stderr
        silent = json.loads(ec("run", "noop", "--json", env=env).stdout)["id"]
        assert ec("logs", silent, env=env).stdout == ""
        # a workflow: each member's log, prefixed by its socket
        wf = submit(env, lambda api: api.pipeline([api.Socket("say").p("one"), api.Socket("do_something").p()]))
        assert ec("wait", wf, "--timeout", "60", env=env).returncode == 0
        member_logs = ec("logs", wf, env=env)
        assert member_logs.stdout == "say: say: one\ndo_something: do_something got 1 argument(s)\n", \
            member_logs.stderr
    assert ec("logs", "no-such-call", env=env).returncode == 2


def test_script_processor(net):
    env, proc = net
    with workers(env, f"{proc}-sh"):
        done = ec("run", "wc", env=env, input="one two  three\nfour\n")
        assert (done.returncode, done.stdout) == (0, "4\n"), done.stderr
        as_json = json.loads(ec("run", "wc", "a b", "--json", env=env).stdout)
        assert as_json["result"] == "2"
        assert ec("logs", as_json["id"], env=env).stdout == "wordcount: counting words\n"
        shown = ec("run", "wc", "--stderr", env=env, input="x y\n")
        assert shown.stdout == "2\n" and "wordcount: counting words" in shown.stderr
        # byte-exact non-UTF-8 round trip is the echo socket's job; here: lines stream through
        mapped = ec("map", "wc", env=env, input="a\na b\na b c\n")
        assert (mapped.returncode, mapped.stdout) == (0, "1\n2\n3\n"), mapped.stderr
        failed = ec("run", "fail", "7", "--json", env=env)
        out = json.loads(failed.stdout)
        assert failed.returncode == 1
        assert (out["error_type"], out["error_message"]) == ("ExitStatus", "exit 7: fail.sh: giving up on purpose")
        retried = json.loads(ec("run", "fail_retried", "--json", env=env).stdout)
        assert retried["status"] == "failed" and retried["attempts"] == 2
        slow = json.loads(ec("run", "snooze", "30", "--json", env=env, timeout=60).stdout)
        assert slow["error_type"] == "TimeoutError"
        # a script socket as a workflow step, after a Python one
        wf = submit(env, lambda api: api.pipeline([api.Socket("wc").p("a b c d e"), api.Socket("wc").p()]))
        assert ec("wait", wf, "--timeout", "60", env=env).stdout == "1\n"  # "5" has one word


def test_script_outside_checkout_is_refused(tmp_path):
    from ectool.worker.executor import ExecExecutor

    repo = make_repo(tmp_path / "repo")
    ex = ExecExecutor(repo)
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\necho escaped\n")
    outside.chmod(0o755)
    assert ex.run("../outside.sh", ["a"], {}, None)["error_type"] == "FunctionNotFound"
    (repo / "bin" / "link.sh").symlink_to(outside)
    assert ex.run("bin/link.sh", ["a"], {}, None)["error_type"] == "FunctionNotFound"
    assert ex.run("/bin/sh", [], {}, None)["error_type"] == "FunctionNotFound"
    assert ex.run("pyfi/processors/sample.py", [], {}, None)["final"] is True  # not executable
    res = ex.run("bin/wordcount.sh", [b"x y z\n"], {}, None)
    assert res["status"] == "done" and json.loads(res["result"]) == "3"
    with pytest.raises(Exception, match="outside|invalid|file path"):
        from ectool import network
        from ectool.store import open_store

        open_store(f"sqlite:///{tmp_path / 'ec.db'}")
        network.add_queue("q", "direct")
        network.add_processor("s", f"file://{repo}", "", runtime="exec")
        network.add_socket("bad", "q", "s", "../etc/passwd")


def test_script_processor_via_agent(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    env = env_for(db_url, f"sqlite:///{tmp_path / 'queue.db'}")
    repo = make_repo(tmp_path / "repo")
    for args in (["add", "queue", "-n", "q"], ["trust", "add", str(repo)],
                 ["add", "processor", "-n", "scripts", "-g", str(repo), "--runtime", "exec"],
                 ["add", "socket", "-n", "wc", "-q", "q", "-pn", "scripts", "-t", "bin/wordcount.sh"],
                 ["add", "processor", "-n", "py", "-g", str(repo), "-m", "pyfi.processors.sample"],
                 ["add", "socket", "-n", "say", "-q", "q", "-pn", "py", "-t", "say"]):
        done = ec(*args, env=env)
        assert done.returncode == 0, done.stderr
    with agent(env, "--cpus", "2"):
        done = ec("run", "wc", "--timeout", "60", env=env, input="hello script world\n")
        assert (done.returncode, done.stdout) == (0, "3\n"), done.stderr
        # a Python call in the isolated executor (the processor's virtualenv) keeps its log too
        said = ec("run", "say", "isolated", "--stderr", "--timeout", "60", env=env)
        assert said.stdout == "ISOLATED\n" and "say: isolated\n" in said.stderr, said.stderr
        rows = wait_for(lambda: {r["name"] for r in json.loads(ec("ls", "processors", "--json", env=env).stdout)
                                 if r["status"] == "running"} == {"scripts", "py"}, what="processors running")
        assert rows


@pytest.mark.slow
def test_ec_demo_on_the_embedded_default(tmp_path):
    """`ec demo` from nothing (a fresh EC_HOME, embedded store and queue): it starts an agent,
    runs the shell examples and the seed's workflow, shows the graph and stops the agent."""
    import subprocess
    import sys

    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("EC_")}
    env.update(EC_HOME=str(tmp_path / "home"), NO_COLOR="1",
               EC_SAMPLE_SRC=str(Path(__file__).resolve().parents[1] / "examples" / "sample"))
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run([sys.executable, "-m", "ectool", "demo"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "FUNNEL:  do_something([do_something(Eight), [" in done.stdout, done.stdout
    tree = [ln for ln in done.stdout.splitlines() if ln.startswith("    ") and "do_something [done" in ln]
    assert tree, done.stdout
    assert "$ ec agent run" in done.stderr and "Try next:" in done.stderr
    assert not demo_agents(before, env["EC_HOME"])


def demo_agents(before: set[int], home: str) -> list:
    """Agent processes started since ``before`` with EC_HOME ``home`` (tests running
    beside this one start agents of their own, in other homes)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = p.info["cmdline"] or []
        if p.pid in before or "agent" not in cmdline or "ectool" not in cmdline:
            continue
        try:
            if p.environ().get("EC_HOME") == home:
                found.append(p)
        except psutil.Error:  # gone meanwhile
            pass
    return found


@pytest.mark.parametrize("broker", ["sqlite", "amqp"])
def test_nul_in_what_a_call_prints_or_raises_is_recorded(tmp_path, db_url, broker, request):
    """PostgreSQL's text cannot hold NUL: a call printing or raising one used to kill its
    worker on every attempt and end dead. Now its outcome is recorded (NUL as U+FFFD in
    the log and the error), on both stores."""
    broker_url = f"sqlite:///{tmp_path / 'queue.db'}" if broker == "sqlite" else request.getfixturevalue("amqp_url")
    proc = f"sample-{uuid.uuid4().hex[:6]}"
    sockets = {**PY_SOCKETS, "boom": ("boom", {})}
    build_network(db_url, make_repo(tmp_path / "repo"), processor=proc, sockets=sockets)
    env = env_for(db_url, broker_url)
    try:
        with workers(env, proc):
            said = ec("run", "--stderr", "say", env=env, input="a\x00b")
            boom = ec("run", "boom", env=env, input="x\x00y")
    finally:
        cleanup(broker_url, sockets)
    assert (said.returncode, said.stdout) == (0, "A\x00B\n"), said.stderr  # the result keeps its NUL (JSON)
    assert "say: a\ufffdb" in said.stderr
    assert boom.returncode == 1 and "x\ufffdy" in boom.stderr and "DeliveryLimit" not in boom.stderr, boom.stderr


@pytest.mark.parametrize("store, broker", [("sqlite", "sqlite"), ("postgresql", "amqp")])
def test_lone_surrogates_in_arguments_results_and_logs_are_recorded(tmp_path, store, broker, request):
    """A str with a lone surrogate (a file name read with surrogateescape, a "\\udc80" JSON
    word) has no UTF-8 form: it gave ec run a traceback, and a worker that had to record,
    retry or print one died on every attempt. Now arguments and results keep it (as a JSON
    escape; printed, U+DC80-U+DCFF is the byte it stands for, any other U+FFFD) and logs
    and errors store U+FFFD."""
    db_url = f"sqlite:///{tmp_path / 'ec.db'}" if store == "sqlite" else request.getfixturevalue("pg_url")
    broker_url = f"sqlite:///{tmp_path / 'queue.db'}" if broker == "sqlite" else request.getfixturevalue("amqp_url")
    proc = f"sample-{uuid.uuid4().hex[:6]}"
    sockets = {**PY_SOCKETS, "echo": ("echo", {}), "boom": ("boom", {"retries": 1, "backoff": 0.05})}
    build_network(db_url, make_repo(tmp_path / "repo"), processor=proc, sockets=sockets)
    env = env_for(db_url, broker_url)
    try:
        with workers(env, proc):
            echoed = ec("run", "echo", '"a\\udc80b"', env=env, input=b"")
            other = ec("run", "echo", '["a\\ud800b"]', "--json", env=env, input=b"")
            said = ec("run", "--stderr", "say", '"a\\udc80b"', env=env, input=b"")
            boom = ec("run", "boom", '"x\\udc80y"', env=env, input=b"")  # retried once, then failed
    finally:
        cleanup(broker_url, sockets)
    assert (echoed.returncode, echoed.stdout) == (0, b"a\x80b\n"), echoed.stderr
    assert other.returncode == 0 and json.loads(other.stdout)["result"] == ["a\ud800b"], other.stderr
    assert said.returncode == 0 and said.stdout == b"A\x80B\n" and "say: a\ufffdb".encode() in said.stderr
    assert boom.returncode == 1 and "failed: ValueError: x\ufffdy".encode() in boom.stderr, boom.stderr
