"""`ec map` / `ec run --lines` end to end: real `ec` processes, real workers, both transports
where ordering is at stake (retries, failures, a worker killed mid-stream)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import (
    SOCKETS,
    build_network,
    ec,
    env_for,
    make_repo,
    sample_network,
    wait_children,
    workers,
)

MAP_SOCKETS = {**SOCKETS, "flaky_line": ("fail_times_line", {"retries": 3, "backoff": 0.05})}


@pytest.fixture
def net(tmp_path, broker_url):
    with sample_network(tmp_path, broker_url, MAP_SOCKETS) as network:
        yield network


@pytest.fixture
def sqlite_net(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    repo = make_repo(tmp_path / "repo")
    build_network(db_url, repo, processor="sample", sockets=MAP_SOCKETS)
    return env_for(db_url, f"sqlite:///{tmp_path / 'queue.db'}"), "sample"


def flaky_input(tmp_path, n: int) -> tuple[str, list[str], list[int]]:
    """Lines for flaky_line: every 5th fails twice then succeeds, every 7th always fails."""
    lines, expected, failing = [], [], []
    for i in range(1, n + 1):
        times = 99 if i % 7 == 0 else 2 if i % 5 == 0 else 0
        lines.append(f"{tmp_path / f'c{i}'} {times} v{i}")
        if times == 99:
            failing.append(i)
        else:
            expected.append(f"v{i}")
    return "".join(f"{line}\n" for line in lines), expected, failing


def test_order_holds_through_retries_and_failures(net, tmp_path):
    env, proc = net
    text, expected, failing = flaky_input(tmp_path, 30)
    with workers(env, proc, 2):
        done = ec("map", "flaky_line", "-j", "6", env=env, input=text)
        lines = ec("run", "--lines", "echo", env=env, input="a\nb\r\n\nc")
    assert done.stdout.splitlines() == expected  # retried lines in place, failed ones absent
    assert done.returncode == 1
    reported = [ln for ln in done.stderr.splitlines() if ": line " in ln]
    assert [int(ln.split()[2].rstrip(":")) for ln in reported] == failing
    assert all(ln.endswith("failed: RuntimeError: failure 4 of 99") for ln in reported)  # 1 + 3 retries
    assert done.stderr.splitlines()[-1] == f"ec: {len(failing)} of 30 call(s) failed"
    assert (lines.returncode, lines.stdout) == (0, "a\nb\n\nc\n")


def test_worker_killed_mid_stream_loses_and_reorders_nothing(net, tmp_path):
    env, proc = net
    values = [f"0.02{i:03d}" for i in range(1, 121)]  # sleep(seconds) returns its argument
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{v}\n" for v in values))
    errors = tmp_path / "stderr"
    with workers(env, proc, 2) as w, source.open() as stdin, errors.open("w") as err:
        kids = wait_children(w, 2)
        mapping = subprocess.Popen([sys.executable, "-m", "ectool", "map", "sleep", "-j", "8"], env=env,
                                   stdin=stdin, stdout=subprocess.PIPE, stderr=err)
        first = mapping.stdout.readline()  # calls are flowing
        kids[0].kill()  # kill -9 one worker while calls are in flight
        out = mapping.stdout.read()  # (through the same buffer as readline)
        mapping.wait(60)
    assert mapping.returncode == 0, errors.read_text()
    assert (first + out).decode().splitlines() == values


def test_halt_now_stops_at_the_first_failure(sqlite_net):
    env, proc = sqlite_net
    with workers(env, proc):
        halted = ec("map", "boom", "--halt", "now,fail=1", "-j", "2", env=env, input="".join(f"{i}\n" for i in range(50)))
        soon = ec("map", "echo", "--halt", "soon,fail=1", env=env, input="a\nb\n")  # nothing fails
        bad = ec("map", "echo", "--halt", "sometimes", env=env, input="a\n")
    assert halted.returncode == 1 and halted.stdout == ""
    assert "halted (--halt now,fail=1) after 1 failed" in halted.stderr
    import json

    calls = json.loads(ec("ls", "calls", "--socket", "boom", "--limit", "100", "--json", env=env).stdout)
    assert len(calls) < 50  # reading stopped; what was queued was cancelled, not run
    assert {c["status"] for c in calls} <= {"failed", "cancelled"}
    assert (soon.returncode, soon.stdout) == (0, "a\nb\n")
    assert bad.returncode == 2 and "bad --halt" in bad.stderr


def test_joblog_resume_and_resume_failed(sqlite_net, tmp_path):
    env, proc = sqlite_net
    log = tmp_path / "jobs.log"
    first = "".join(f"{tmp_path / f'k{i}'} {99 if i == 3 else 0} v{i}\n" for i in range(1, 7))
    more = first + "".join(f"{tmp_path / f'k{i}'} 0 v{i}\n" for i in (7, 8))
    with workers(env, proc, 2):
        one = ec("map", "flaky_line", "--joblog", str(log), env=env, input=first)
        rows = [ln.split("\t") for ln in log.read_text().splitlines()]
        two = ec("map", "flaky_line", "--joblog", str(log), "--resume", env=env, input=more)
        three = ec("map", "flaky_line", "--joblog", str(log), "--resume-failed", env=env,
                   input=more.replace(" 99 v3", " 0 v3"))
        nolog = ec("map", "echo", "--resume", env=env, input="x\n")
    assert one.returncode == 1 and one.stdout.split() == ["v1", "v2", "v4", "v5", "v6"]
    assert rows[0] == ["Seq", "Host", "Starttime", "JobRuntime", "Send", "Receive", "Exitval", "Signal", "Command"]
    assert sorted(int(r[0]) for r in rows[1:]) == [1, 2, 3, 4, 5, 6]
    assert {r[0]: r[6] for r in rows[1:]}["3"] == "1" and {r[6] for r in rows[1:] if r[0] != "3"} == {"0"}
    row = next(r for r in rows[1:] if r[0] == "1")
    assert row[4] == str(len(f"{tmp_path / 'k1'} 0 v1\n")) and row[5] == "3"  # bytes in, bytes out
    assert row[8] == f"flaky_line {tmp_path / 'k1'} 0 v1"
    assert (two.returncode, two.stdout) == (0, "v7\nv8\n")  # only the lines the joblog lacks
    assert (three.returncode, three.stdout) == (0, "v3\n")  # only the failed line, again
    assert nolog.returncode == 2 and "--joblog" in nolog.stderr


def test_a_line_over_the_message_limit_is_named(sqlite_net):
    """No worker needed: the over-limit line stops the map before it is sent (exit 2),
    and the error names it."""
    env, _ = sqlite_net
    done = ec("map", "echo", env=dict(env, EC_MAX_MESSAGE_BYTES="2000"), input="a\n" + "x" * 5000 + "\nb\n",
              timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("ec: line 2: call message is "), done.stderr


def test_bytes_empty_long_lines_and_closed_stdout(sqlite_net):
    env, proc = sqlite_net
    long_line = "x" * (1 << 20)
    with workers(env, proc, 2):
        binary = ec("map", "echo", env=env, input=b"ok\n\xff\xfe\x00\ncaf\xc3\xa9\n")
        empty = ec("map", "echo", env=env, input="")
        big = ec("map", "echo", env=env, input=f"a\n{long_line}\nb\n")
        as_json = ec("map", "echo", "--json", env=env, input="1\n2\n")
        head = subprocess.run(["bash", "-c", "seq 2000 | ec map echo -j 16 | head -1; echo \"${PIPESTATUS[1]}\" >&2"],
                              env=dict(env, PATH=f"{os.path.dirname(sys.executable)}:{env['PATH']}"),
                              capture_output=True, text=True, timeout=60)
    assert (binary.returncode, binary.stdout) == (0, b"ok\n\xff\xfe\x00\ncaf\xc3\xa9\n")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "")
    assert big.returncode == 0 and big.stdout == f"a\n{long_line}\nb\n"
    import json

    assert [json.loads(ln)["line"] for ln in as_json.stdout.splitlines()] == [1, 2]
    assert json.loads(as_json.stdout.splitlines()[0])["result"] == "1"
    assert head.stdout == "1\n" and head.stderr.strip() == "0" and "Traceback" not in head.stderr
