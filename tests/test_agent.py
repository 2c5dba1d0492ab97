"""The agent: deploys processors from real git repositories into virtualenvs, runs one
worker per granted core, reacts to `ec proc ...`, survives kill -9, re-places work."""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid

import psutil
import pytest

from helpers import agent, ec, env_for, make_repo, wait_for


@pytest.fixture
def setup(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    broker_url = f"sqlite:///{tmp_path / 'queue.db'}"
    env = env_for(db_url, broker_url, EC_AGENT_STALE="3")
    repo = make_repo(tmp_path / "repo")
    return env, repo


def add(env, *args):
    done = ec(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done


def network(env, repo, socket, task, *processor_options):
    """What most tests here start from, made with ``ec``: queue q, the repo trusted,
    processor p1 from it (with ``processor_options``) and SOCKET calling TASK."""
    add(env, "add", "queue", "-n", "q")
    add(env, "trust", "add", str(repo))
    add(env, "add", "processor", "-n", "p1", "-g", str(repo), "-m", "pyfi.processors.sample", *processor_options)
    add(env, "add", "socket", "-n", socket, "-q", "q", "-pn", "p1", "-t", task)


def processor(env, name):
    rows = json.loads(ec("ls", "processors", "--json", env=env).stdout)
    return next(r for r in rows if r["name"] == name)


def live_workers(env, name):
    return [w for w in json.loads(ec("ls", "workers", "--json", env=env).stdout) if w["processor"] == name]


def commit(repo, path, text, message):
    import git

    (repo / path).write_text(text)
    r = git.Repo(repo)
    r.git.add(A=True)
    return r.index.commit(message).hexsha


def test_empty_store_to_working_calls(setup):
    env, repo = setup
    network(env, repo, "up", "upper", "-c", "2")
    with agent(env, "--cpus", "2") as a:
        done = ec("run", "up", "hello", "--timeout", "60", env=env)
        assert (done.returncode, done.stdout) == (0, "HELLO\n"), done.stderr
        workers = wait_for(lambda: len(live_workers(env, "p1")) == 2 and live_workers(env, "p1"), what="2 workers")
        import git

        head = git.Repo(repo).head.commit.hexsha
        assert {w["commit"] for w in workers} == {head}
        assert sorted(w["cpu"] for w in workers) == [0, 1]
        assert processor(env, "p1")["status"] == "running"
        agents = json.loads(ec("agent", "ls", "--json", env=env).stdout)
        assert agents[0]["status"] == "online" and agents[0]["processors"] == ["p1x2"]
        assert a.poll() is None


def test_a_master_repository_deploys_without_b_and_show_says_what(setup):
    """`git init` made master here: without -b the agent deploys the repository's default
    branch, and `ec show processor` says which branch and commit run."""
    import git

    env, repo = setup
    git.Repo(repo).git.branch("-m", "main", "master")
    network(env, repo, "up", "upper")
    with agent(env, "--cpus", "1"):
        done = ec("run", "up", "hello", "--timeout", "60", env=env)
        assert (done.returncode, done.stdout) == (0, "HELLO\n"), done.stderr
    shown = json.loads(ec("show", "processor", "p1", "--json", env=env).stdout)
    assert shown["branch"] is None and shown["deployed_branch"] == "master"
    assert shown["deployed_commit"] == git.Repo(repo).head.commit.hexsha
    text = ec("show", "processor", "p1", env=env).stdout
    assert "master" in text and shown["deployed_commit"] in text


def test_bad_processors_end_in_error_and_the_good_one_serves(setup, tmp_path):
    env, repo = setup
    broken = make_repo(tmp_path / "broken")
    commit(broken, "requirements.txt", "ec-this-package-does-not-exist==0.0.1\n", "bad requirement")
    add(env, "add", "queue", "-n", "q")
    add(env, "trust", "add", "*")
    cases = {
        "missing": (str(tmp_path / "nope"), "pyfi.processors.sample", []),
        "badbranch": (str(repo), "pyfi.processors.sample", ["-b", "nope"]),
        "badcommit": (str(repo), "pyfi.processors.sample", ["--commit", "0" * 40]),
        "badmodule": (str(repo), "pyfi.processors.nothing", []),
        "badreqs": (str(broken), "pyfi.processors.sample", []),
        "good": (str(repo), "pyfi.processors.sample", []),
    }
    for name, (url, module, extra) in cases.items():
        add(env, "add", "processor", "-n", name, "-g", url, "-m", module, *extra)
    add(env, "add", "socket", "-n", "up", "-q", "q", "-pn", "good", "-t", "upper")
    add(env, "add", "socket", "-n", "untrusted-socket", "-q", "q", "-pn", "good", "-t", "echo")
    with agent(env, "--cpus", "8"):
        assert ec("run", "up", "ok", "--timeout", "90", env=env).stdout == "OK\n"

        def all_errors():
            rows = {r["name"]: r for r in json.loads(ec("ls", "processors", "--json", env=env).stdout)}
            bad = [rows[n] for n in cases if n != "good"]
            return rows if all(r["status"] == "error" for r in bad) else None

        rows = wait_for(all_errors, timeout=120, what="every bad processor in error")
    reasons = {n: rows[n]["status_reason"] for n in cases}
    assert "cannot fetch" in reasons["missing"]
    assert "branch 'nope' does not exist" in reasons["badbranch"]
    assert "does not exist" in reasons["badcommit"]
    assert "fails to import" in reasons["badmodule"]
    assert "cannot install requirements" in reasons["badreqs"]
    assert rows["good"]["status"] == "running"
    assert all("\n" not in r for n, r in reasons.items() if n != "good")


def test_untrusted_repo_is_refused_with_reason(setup):
    env, repo = setup
    add(env, "add", "queue", "-n", "q")
    add(env, "add", "processor", "-n", "p1", "-g", str(repo), "-m", "pyfi.processors.sample")
    with agent(env):
        row = wait_for(lambda: processor(env, "p1")["status"] == "error" and processor(env, "p1"), what="error")
        assert "not trusted" in row["status_reason"]
        add(env, "trust", "add", str(repo))
        wait_for(lambda: processor(env, "p1")["status"] == "running", what="deployed once trusted")


def test_pause_resume_restart_act_on_the_wake_up(setup):
    env, repo = setup
    network(env, repo, "pid", "whoami")
    # the agent's own loop would come round only after an hour, far past every wait here:
    # whatever it does meanwhile, the wake-up `ec proc` sends made it do
    with agent(env, "--interval", "3600"):
        first = json.loads(ec("run", "pid", "--json", "--timeout", "60", env=env).stdout)["result"]
        add(env, "proc", "pause", "p1")
        wait_for(lambda: processor(env, "p1")["status"] == "paused" and not live_workers(env, "p1"),
                 what="paused, its workers stopped")
        late = ec("run", "pid", "--timeout", "1", env=env)
        assert late.returncode == 4  # queued while paused, not lost
        add(env, "proc", "resume", "p1")
        assert ec("wait", late.stderr.split("call ")[1].split()[0], "--timeout", "30", env=env).returncode == 0
        add(env, "proc", "restart", "p1")
        second = wait_for(lambda: (r := json.loads(ec("run", "pid", "--json", "--timeout", "30", env=env).stdout)
                                   ["result"]) != first and r, timeout=30, what="a new worker after restart")
        assert second != first


def test_update_to_new_commit_switches_workers(setup):
    env, repo = setup
    network(env, repo, "v", "version")
    new = commit(repo, "pyfi/processors/sample.py",
                 (repo / "pyfi/processors/sample.py").read_text() + "\n\ndef version():\n    return 2\n", "v2")
    with agent(env):
        add(env, "update", "processor", "p1", f"commit={new}")
        done = ec("run", "v", "--timeout", "60", env=env)
        assert done.stdout == "2\n", done.stderr
        wait_for(lambda: {w["commit"] for w in live_workers(env, "p1")} == {new}, what="only new workers")
        # provenance: the call records the agent's deployment (its commit), not a guess
        ran = json.loads(ec("ls", "calls", "--json", "--commit", new[:10], env=env).stdout)
        assert [(c["socket"], c["status"], c["processor"], c["commit"]) for c in ran] == [("v", "done", "p1", new)]


def test_kill_9_agent_workers_exit_and_restart_loses_nothing(setup):
    env, repo = setup
    network(env, repo, "sleep", "sleep", "-c", "2")
    ids = [ec("run", "--no-wait", "sleep", "0.05", str(i), env=env).stdout.strip() for i in range(30)]
    with agent(env, "--cpus", "2") as a:
        kids = wait_for(lambda: len(psutil.Process(a.pid).children()) >= 2 and psutil.Process(a.pid).children(),
                        what="workers")

        def under_way():
            rows = json.loads(ec("ls", "calls", "--json", env=env).stdout)
            return [r for r in rows if r["status"] in ("running", "done")]

        wait_for(under_way, what="calls under way")  # killed mid-stream, not before it
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        gone, alive = psutil.wait_procs(kids, timeout=15)
        assert not alive, "workers must not outlive their agent"
    with agent(env, "--cpus", "2"):
        done = ec("wait", *ids, "--timeout", "90", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(i) for i in range(30)]


def test_stale_agent_work_is_replaced_on_a_live_agent(setup):
    env, repo = setup
    network(env, repo, "add", "add_two", "-c", "1")
    with agent(env, "--name", "a1", "--cpus", "1") as a1:
        assert ec("run", "add", "1", "2", "--timeout", "60", env=env).stdout == "3\n"
        with agent(env, "--name", "a2", "--cpus", "1"):
            agents = wait_for(lambda: len(json.loads(ec("agent", "ls", "--json", env=env).stdout)) == 2 and
                              json.loads(ec("agent", "ls", "--json", env=env).stdout), what="two agents")
            assert {a["name"]: a["processors"] for a in agents} == {"a1": ["p1x1"], "a2": []}
            kids = psutil.Process(a1.pid).children()
            os.kill(a1.pid, signal.SIGKILL)
            psutil.wait_procs(kids, timeout=15)
            done = ec("run", "add", "2", "2", "--timeout", "60", env=env)
            assert done.stdout == "4\n", done.stderr
            agents = {a["name"]: a for a in json.loads(ec("agent", "ls", "--json", env=env).stdout)}
            assert agents["a1"]["status"] == "lost" and agents["a2"]["processors"] == ["p1x1"]


def test_systemd_notify_protocol(setup, tmp_path):
    env, repo = setup
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    try:
        with agent(dict(env, NOTIFY_SOCKET=path)) as a:
            assert sock.recv(4096).decode().startswith("READY=1")
            a.send_signal(signal.SIGTERM)
            a.wait(30)
            messages = []
            while True:
                try:
                    messages.append(sock.recv(4096).decode())
                except TimeoutError:
                    break
                if "STOPPING=1" in messages[-1]:
                    break
            assert "STOPPING=1" in messages
            assert a.returncode == 0
    finally:
        sock.close()


def test_agent_name_clash_is_refused(setup):
    env, _ = setup
    with agent(env, "--name", "same"):
        wait_for(lambda: json.loads(ec("agent", "ls", "--json", env=env).stdout), what="agent online")
        second = ec("agent", "run", "--name", "same", env=env)
        assert second.returncode == 2 and "already running" in second.stderr


_ = uuid


def test_sigterm_stops_the_agent_at_once_whatever_its_interval(setup):
    env, repo = setup
    network(env, repo, "up", "upper")
    with agent(env, "--interval", "3600") as a:
        assert ec("run", "up", "x", "--timeout", "60", env=env).stdout == "X\n"
        a.send_signal(signal.SIGTERM)
        a.wait(60)  # raises if it sleeps out its interval (an hour)
        assert a.returncode == 0
        a.stderr_log.seek(0)
        assert "stopped" in a.stderr_log.read()
    assert not live_workers(env, "p1")


def test_restart_keeps_core_pinning_and_stop_reports_stopped(setup):
    """Issue 21: after `ec proc restart` the new workers were not pinned to a core (the old
    ones, still draining, held the cores), and after `ec proc stop` the processor's status
    stayed `running`."""
    env, repo = setup
    network(env, repo, "pid", "whoami", "-c", "2")
    with agent(env, "--cpus", "2"):
        first = wait_for(lambda: len(live_workers(env, "p1")) == 2 and live_workers(env, "p1"), what="2 workers")
        assert sorted(w["cpu"] for w in first) == [0, 1]
        add(env, "proc", "restart", "p1")
        old = {w["pid"] for w in first}
        again = wait_for(lambda: (ws := live_workers(env, "p1")) and len(ws) == 2
                         and not {w["pid"] for w in ws} & old and ws, timeout=60, what="2 new workers")
        assert sorted(w["cpu"] for w in again) == [0, 1]
        for w in again:
            assert psutil.Process(w["pid"]).cpu_affinity() == [w["cpu"]]
        assert ec("run", "pid", "--timeout", "60", env=env).returncode == 0
        add(env, "proc", "stop", "p1")
        wait_for(lambda: processor(env, "p1")["status"] == "stopped", timeout=30, what="status stopped")
        wait_for(lambda: not live_workers(env, "p1"), timeout=30, what="no workers")
        assert processor(env, "p1")["status"] == "stopped"
