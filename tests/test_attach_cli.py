"""Named streams and `ec attach` end to end: `ec map --name` killed with kill -9 at random
points, then `ec attach NAME >> out` completes `out` exactly (both transports); input the
producer never read is reported; bad input is one line and exit 2. Also the pure
reconciliation of an output file a dead producer wrote to."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys

import pytest

from ectool.stream_output import Identity, Trim, already_written
from helpers import (
    SOCKETS,
    build_network,
    ec,
    env_for,
    make_repo,
    sample_network,
    wait_for,
    workers,
)

N = 5000


@pytest.fixture
def net(tmp_path, broker_url):
    with sample_network(tmp_path, broker_url, SOCKETS) as network:
        yield network


def stream_row(env, name):
    """The stream's record as the store holds it now (None before it exists)."""
    from ectool.store import open_store, streams

    open_store(env["EC_DB"])
    return streams.get(name)


def producer(env, name, socket, stdin, stdout):
    return subprocess.Popen([sys.executable, "-m", "ectool", "map", "--name", name, socket], env=env,
                            stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()


def test_attach_after_kill_9_completes_the_output_line_for_line(net, tmp_path):
    """`seq 5000 | ec map --name big S > out` killed (kill -9 of ec map itself) once its
    input is stored and its output reached a random size; `ec attach big >> out` makes out
    equal to the uninterrupted run's output, no line twice, no line missing."""
    env, proc = net
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    kill_and_attach(env, proc, tmp_path, lambda size: [0, rng.randrange(1, size // 2), rng.randrange(size // 2, size)],
                    f"seed {seed}")


def test_attach_on_postgresql_and_rabbitmq(tmp_path, pg_url, amqp_url):
    """The distributed mode: the stream's rows in PostgreSQL, the calls over RabbitMQ."""
    env = env_for(pg_url, amqp_url)
    build_network(pg_url, make_repo(tmp_path / "repo"), processor="pgsample")
    try:
        kill_and_attach(env, "pgsample", tmp_path, lambda size: [random.randrange(1, size)], "postgresql")
    finally:
        from ectool.calls import broker_queue
        from ectool.transport import connect

        with connect(amqp_url) as t:
            for name in SOCKETS:
                t.delete_queue(broker_queue(name, env["EC_NAMESPACE"]))


def kill_and_attach(env, proc, tmp_path, kill_points, label):
    """For each output size kill_points(size) gives: run the map under a name, kill -9 it
    once its input is stored and its output reached that size, `ec attach NAME >> out`,
    and compare out with the uninterrupted run's output."""
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{i}\n" for i in range(1, N + 1)))
    with workers(env, proc, 2):
        whole = ec("map", "echo", env=env, input=source.read_text())
        assert whole.returncode == 0, whole.stderr
        expected = whole.stdout
        for round_, target in enumerate(kill_points(len(expected))):
            name = f"big{round_}"
            out = tmp_path / f"out{round_}"
            with source.open("rb") as stdin, out.open("wb") as stdout:
                mapping = producer(env, name, "echo", stdin, stdout)
                try:
                    wait_for(lambda n=name: (row := stream_row(env, n)) is not None and row.eof,
                             what="the input stored")
                    wait_for(lambda o=out, t=target, m=mapping: o.stat().st_size >= t or m.poll() is not None,
                             every=0.002, what=f"{target} bytes of output")
                finally:
                    kill9(mapping)
            killed_at = out.stat().st_size
            if mapping.returncode == 0 or stream_row(env, name).state == "finished":
                # it finished before the kill landed (a fast machine): nothing to attach
                assert out.read_text() == expected, (label, killed_at)
                continue
            with out.open("ab") as stdout:
                attach = subprocess.run([sys.executable, "-m", "ectool", "attach", name], env=env, stdout=stdout,
                                        stderr=subprocess.PIPE, text=True, timeout=120)
            got = out.read_text()
            print(f"{label}: killed at {killed_at} of {len(expected)} bytes; attach: {attach.stderr.strip()}")
            assert attach.returncode == 0, attach.stderr
            assert got.splitlines() == expected.splitlines(), (label, killed_at)
            assert got == expected
            assert stream_row(env, name).state == "finished"


def test_attach_killed_is_attached_again(net, tmp_path):
    """ec attach records its own position: killed (-9) itself, twice, the next attach still
    completes out exactly."""
    env, proc = net
    values = [f"0.00{i % 10}" for i in range(1500)]  # sleep(seconds) returns its argument
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{v}\n" for v in values))
    out = tmp_path / "out"

    def grown(p, size):
        return out.stat().st_size >= size or p.poll() is not None

    with workers(env, proc, 2):
        with source.open("rb") as stdin, out.open("wb") as stdout:
            mapping = producer(env, "s", "sleep", stdin, stdout)
            try:
                wait_for(lambda: grown(mapping, 1000), every=0.002, what="1000 bytes")
            finally:
                kill9(mapping)
        if mapping.returncode == 0:
            pytest.skip("the map finished before it could be killed")
        for size in (3000, 5000):
            with out.open("ab") as stdout:
                attach = subprocess.Popen([sys.executable, "-m", "ectool", "attach", "s"], env=env, stdout=stdout,
                                          stderr=subprocess.PIPE)
                try:
                    wait_for(lambda a=attach, n=size: grown(a, n), every=0.002, what=f"{size} bytes")
                finally:
                    kill9(attach)
        with out.open("ab") as stdout:
            last = subprocess.run([sys.executable, "-m", "ectool", "attach", "s"], env=env, stdout=stdout,
                                  stderr=subprocess.PIPE, text=True, timeout=120)
    assert last.returncode == 0, last.stderr
    assert out.read_text().splitlines() == values


def test_input_never_read_is_reported_not_invented(net, tmp_path):
    """A producer killed while its input is still open: attach prints the lines it had
    read, says the rest was never read, exits 1; the stream is then finished."""
    env, proc = net
    out = tmp_path / "out"
    with workers(env, proc, 1), out.open("wb") as stdout:
        mapping = producer(env, "cut", "echo", subprocess.PIPE, stdout)
        try:
            mapping.stdin.write(b"a\nb\nc\n")
            mapping.stdin.flush()
            wait_for(lambda: (row := stream_row(env, "cut")) is not None and row.read == 3, what="3 lines stored")
            busy = ec("attach", "cut", env=env)  # its writer is alive
        finally:
            kill9(mapping)
            mapping.stdin.close()
        listed = json.loads(ec("ls", "streams", "--json", env=env).stdout)
        attach = ec("attach", "cut", env=env)
        again = ec("attach", "cut", env=env)
    assert (busy.returncode, busy.stdout) == (2, "")
    assert busy.stderr == f"ec: stream cut is still being written by pid {mapping.pid} on {listed[0]['host']}\n"
    assert [(r["name"], r["state"], r["lines"], r["input"]) for r in listed] == [("cut", "detached", 3, "cut")]
    assert attach.returncode == 1
    assert "a\nb\nc\n".endswith(attach.stdout)  # from where the output stopped (stdout is not the file)
    assert set((out.read_text() + attach.stdout).split()) == {"a", "b", "c"}
    assert attach.stderr.splitlines()[-1] == ("ec: stream cut: its input after line 3 was never read "
                                              "(the producer died first); nothing ran for it")
    assert again.returncode == 2 and again.stderr.startswith("ec: stream cut is finished")


def test_failed_calls_of_a_stream_set_exit_1(net, tmp_path):
    env, proc = net
    with workers(env, proc, 1):
        mapping = producer(env, "bad", "boom", subprocess.PIPE, subprocess.DEVNULL)
        try:
            mapping.stdin.write(b"1\n2\n")
            mapping.stdin.close()
            wait_for(lambda: (row := stream_row(env, "bad")) is not None and row.eof, what="the input stored")
        finally:
            kill9(mapping)
        attach = ec("attach", "bad", "--from-start", env=env)
        shown = json.loads(ec("show", "stream", "bad", "--json", env=env).stdout)
    assert attach.returncode == 1 and attach.stdout == ""
    lines = attach.stderr.splitlines()
    assert [ln.split(":")[1] for ln in lines[:2]] == [" line 1", " line 2"]
    assert lines[-1] == "ec: stream bad: 2 of 2 call(s) failed"
    assert (shown["state"], shown["calls"]) == ("finished", {"failed": 2})


def test_bad_input_is_one_line_and_exit_2(net, tmp_path):
    env, proc = net
    with workers(env, proc, 1):
        done = ec("map", "--name", "s", "echo", env=env, input="x\n")
        listed = ec("ls", "streams", env=env)
        checks = {
            "unknown": ec("attach", "nope", env=env),
            "finished": ec("attach", "s", env=env),
            "unordered": ec("map", "--name", "u", "--unordered", "echo", env=env, input="x\n"),
            "no --lines": ec("run", "--name", "r", "echo", "x", env=env),
            "show unknown": ec("show", "stream", "nope", env=env),
            "delete unknown": ec("delete", "stream", "nope", env=env),
        }
        again = ec("attach", "--from-start", "s", env=env)
        deleted = ec("delete", "stream", "s", env=env)
        reused = ec("map", "--name", "s", "echo", env=env, input="y\n")
        lines = ec("run", "--lines", "--name", "r", "echo", env=env, input="z\n")
        named = [r["name"] for r in json.loads(ec("ls", "streams", "--json", env=env).stdout)]
    assert (done.returncode, done.stdout) == (0, "x\n")
    assert listed.stdout.splitlines()[1].split("\t")[:8] == ["s", "echo", "finished", "1", "complete", "1", "1",
                                                             "100%"]
    for what, result in checks.items():
        assert result.returncode == 2, (what, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr, what
    assert checks["unknown"].stderr == "ec: no stream named 'nope' (ec ls streams)\n"
    assert checks["finished"].stderr == ("ec: stream s is finished: all its 1 line(s) were written "
                                         "(--from-start prints them again)\n")
    assert (again.returncode, again.stdout) == (0, "x\n")
    assert deleted.returncode == 0 and reused.stdout == "y\n"
    assert (lines.returncode, lines.stdout, named) == (0, "z\n", ["s", "r"])


@pytest.mark.parametrize("recorded, current, skip, noted", [
    (None, Identity(1, 2, 50), 0, False),  # no file recorded (a pipe, a terminal)
    (Identity(1, 2, 50), None, 0, False),  # attach writes to a pipe
    (Identity(1, 2, 50), Identity(1, 3, 80), 0, False),  # another file
    (Identity(1, 2, 50), Identity(1, 2, 50), 0, False),  # nothing written after the record
    (Identity(1, 2, 50), Identity(1, 2, 80), 30, False),  # 30 bytes written after it: skipped
    (Identity(1, 2, 50), Identity(1, 2, 10), 0, True),  # truncated since (> instead of >>)
])
def test_already_written(recorded, current, skip, noted):
    got, note = already_written(recorded, current)
    assert (got, note is not None) == (skip, noted)


def test_trim_drops_the_first_bytes_across_lines():
    trim = Trim(5)
    assert [trim(b"abc\n"), trim(b"def\n"), trim(b"gh\n")] == [b"", b"ef\n", b"gh\n"]
    assert trim.skip == 0
