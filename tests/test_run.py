"""End to end: `ec run` against real worker processes, on both transports.

Each test builds the sample processor's network in a fresh SQLite store, starts
`ec worker` (stopped by pid afterwards) and drives `ec` as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from helpers import ec, sample_network, stop_tree, wait_for, workers


@pytest.fixture
def net(tmp_path, broker_url):
    with sample_network(tmp_path, broker_url) as network:
        yield network


def test_stdin_call_prints_result(net):
    env, proc = net
    with workers(env, proc):
        done = ec("run", "do_something", env=env, input="HI THERE!\n")
        assert (done.returncode, done.stdout) == (0, "do_something(HI THERE!)\n"), done.stderr
        seed = ec("task", "run", "--socket", "do_something", "--data", "['some data']", env=env)
        assert seed.stdout == "do_something(some data)\n"
        assert ec("run", "add_two", "3", "10", env=env).stdout == "13\n"
        as_json = json.loads(ec("run", "add_two", "[1]", "[2]", "--json", env=env).stdout)
        assert as_json["status"] == "done" and as_json["result"] == [1, 2]


def test_non_utf8_stdin_round_trips_byte_exact(net):
    env, proc = net
    payload = bytes(range(256)) * 4 + b"\n\xff"
    with workers(env, proc):
        done = ec("run", "echo", env=env, input=payload)
    assert done.returncode == 0 and done.stdout == payload


def test_unknown_socket_is_usage_error(net):
    env, _ = net
    done = ec("run", "nope", "x", env=env)
    assert done.returncode == 2 and "unknown socket 'nope'" in done.stderr
    deep = ec("run", "add_two", "[" * 100_000, "1", env=env)  # both paths: plain, and through click
    deep_click = ec("run", "--json", "add_two", "[" * 50_000 + "]" * 50_000, "1", env=env)
    for done in (deep, deep_click):
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nested too deeply" in done.stderr, \
            done.stderr[-500:]


def test_signature_mismatch_fails_clearly_and_worker_survives(net):
    env, proc = net
    with workers(env, proc) as w:
        bad = ec("run", "add_two", "1", env=env)
        assert bad.returncode == 1
        assert "arguments do not match add_two(a, b)" in bad.stderr
        assert ec("run", "add_two", "1", "2", env=env).stdout == "3\n"
        assert w.poll() is None


def test_exception_is_retried_then_failed_with_traceback(net):
    env, proc = net
    with workers(env, proc):
        done = ec("run", "boom", "kaput", "--json", env=env)
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert (out["status"], out["error_type"], out["error_message"], out["attempts"]) == \
        ("failed", "ValueError", "kaput", 3)
    shown = json.loads(ec("show", "call", out["id"], "--json", env=env).stdout)
    assert "raise ValueError(message)" in shown["traceback"]
    assert shown["attempts"] == 3


def test_flaky_function_succeeds_after_retries(net, tmp_path):
    env, proc = net
    counter = tmp_path / "count"
    with workers(env, proc):
        done = ec("run", "flaky", json.dumps(str(counter)), "2", '"fine"', "--json", env=env)
    out = json.loads(done.stdout)
    assert (done.returncode, out["result"], out["attempts"]) == (0, "fine", 3)


def test_timeout_fails_the_call_not_the_worker(net):
    env, proc = net
    with workers(env, proc) as w:
        slow = ec("run", "slow", "5", env=env)
        assert slow.returncode == 1 and "TimeoutError" in slow.stderr and "0.5s" in slow.stderr
        assert ec("run", "slow", "0.01", env=env).stdout == "0.01\n"
        assert w.poll() is None


def test_payload_over_limit_is_refused_before_sending(net):
    env, proc = net
    env = dict(env, EC_MAX_MESSAGE_BYTES="1000")
    done = ec("run", "echo", env=env, input="x" * 5000)
    assert done.returncode == 2 and "over the limit of 1000" in done.stderr
    listed = json.loads(ec("ls", "calls", "--json", env=env).stdout)
    assert listed == []  # nothing was recorded, nothing was sent


def test_no_worker_waits_durably_then_completes(net):
    env, proc = net
    late = ec("run", "add_two", "2", "2", "--timeout", "0.5", env=env)
    assert late.returncode == 4 and "ec wait" in late.stderr
    call_id = late.stderr.split("call ")[1].split()[0]
    assert json.loads(ec("show", "call", call_id, "--json", env=env).stdout)["status"] == "queued"
    with workers(env, proc):
        waited = ec("wait", call_id, "--timeout", "30", env=env)
    assert (waited.returncode, waited.stdout) == (0, "4\n")
    assert ec("result", call_id, env=env).stdout == "4\n"


def test_interrupted_run_says_the_call_goes_on_and_it_does(net):
    """Ctrl-C while `ec run` waits: exit 130, one line naming the call (no traceback); the
    call stays durable and finishes once a worker comes."""
    env, proc = net
    run = subprocess.Popen([sys.executable, "-m", "ectool", "run", "add_two", "20", "22"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: json.loads(ec("ls", "calls", "--json", env=env).stdout), what="the call in the store")
        time.sleep(0.2)  # past the submit, into the wait
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=30)
    finally:
        stop_tree(run)
    assert run.returncode == 130 and out == "" and "Traceback" not in err, err
    assert "keeps running (ec wait " in err, err
    call_id = err.split("call ")[1].split()[0]
    with workers(env, proc):
        waited = ec("wait", call_id, "--timeout", "30", env=env)
    assert (waited.returncode, waited.stdout) == (0, "42\n"), waited.stderr


def test_plain_run_skips_click_and_agrees_with_the_click_path(net):
    """`ec run SOCKET WORD...` takes the click-free path; the same call with an option
    goes through click; both print the same result, and errors the same way. Neither
    loads psycopg2, the store being SQLite."""
    env, proc = net
    probe = ("import sys\nfrom ectool.cli import main\ntry:\n    main(sys.argv[1:])\n"
             "finally:\n    print('click' in sys.modules, 'psycopg2' in sys.modules, file=sys.stderr)\n")

    def ec_probe(*args):
        return subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True,
                              timeout=60)

    with workers(env, proc):
        fast, slow = ec_probe("run", "add_two", "3", "10"), ec_probe("run", "add_two", "3", "10", "--timeout", "30")
    assert (fast.returncode, fast.stdout, fast.stderr) == (0, "13\n", "False False\n")
    assert (slow.returncode, slow.stdout, slow.stderr) == (0, "13\n", "True False\n")
    fast, slow = ec_probe("run", "nope", "x"), ec_probe("run", "nope", "x", "--timeout", "1")
    assert fast.returncode == slow.returncode == 2
    assert fast.stderr.splitlines()[0] == slow.stderr.splitlines()[0] == \
        "ec: unknown socket 'nope' (see 'ec ls sockets')"


def test_no_wait_prints_id_and_call_graph(net):
    env, proc = net
    ids = [ec("run", "--no-wait", "add_two", str(i), "1", env=env).stdout.strip() for i in range(3)]
    assert all(len(i) == 36 for i in ids)
    pending = ec("result", ids[0], env=env)
    assert pending.returncode == 4
    with workers(env, proc):
        waited = ec("wait", *ids, env=env)
    assert waited.stdout.splitlines() == ["1", "2", "3"]
    graph = ec("ls", "call", "--id", ids[0], "-g", env=env)
    assert graph.returncode == 0 and graph.stdout.startswith("add_two [done")
    calls = json.loads(ec("ls", "calls", "--status", "done", "--json", env=env).stdout)
    assert {c["id"] for c in calls} == set(ids)


def test_cancel_queued_call(net):
    env, proc = net
    cid = ec("run", "--no-wait", "add_two", "1", "1", env=env).stdout.strip()
    assert ec("cancel", cid, env=env).returncode == 0
    with workers(env, proc):
        assert ec("run", "add_two", "5", "5", env=env).stdout == "10\n"  # the worker is serving
        out = ec("wait", cid, "--json", env=env)
    assert out.returncode == 1 and json.loads(out.stdout)["status"] == "cancelled"


def test_map_keeps_input_order(net):
    env, proc = net
    lines = "".join(f"{i}\n" for i in range(40))
    with workers(env, proc, 2):
        done = ec("map", "echo", "-j", "8", env=env, input=lines)
    assert done.returncode == 0
    assert done.stdout == lines  # results (numbers parsed as text lines) in input order


def test_garbage_message_is_dead_lettered_and_worker_keeps_going(net, broker_url):
    env, proc = net
    from ectool.calls import broker_queue
    from ectool.transport import connect

    with workers(env, proc) as w:
        assert ec("run", "noop", env=env, input="").returncode == 0  # queue declared, worker up
        marker = uuid.uuid4().hex
        with connect(broker_url) as t:
            deep = b"[" * 100_000 + b"]" * 100_000  # too deep for any JSON parser in Python
            t.publish(broker_queue("noop", os.environ["EC_NAMESPACE"]), [b"\x00garbage{" + marker.encode(),
                                             b'{"v": 1, "id": "not-a-call", "m": "%s"}' % marker.encode(),
                                             b'{"m": "%s", "v": 1, "args": %s}' % (marker.encode(), deep)])
        assert ec("run", "add_two", "1", "1", env=env).stdout == "2\n"
        assert ec("run", "noop", env=env, input="").returncode == 0
        assert w.poll() is None

    def mine() -> list:
        dead = json.loads(ec("dead", "--limit", "100000", "--json", env=env).stdout)
        return [d for d in dead if d["queue"] == broker_queue("noop", os.environ["EC_NAMESPACE"])
                and marker in d["body"]]

    # ec.dead is shared: a test reading it at the same moment holds what it browses
    found = wait_for(lambda: len(got := mine()) >= 3 and got, every=0.2, what="the three dead letters")
    assert len(found) == 3 and all("undecodable message" in d["reason"] for d in found), found
