"""Test helpers: a real git repo of the sample processor, a network on it, worker
processes started and stopped by pid, and the ``ec`` command run as a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample"

#: socket name -> (function, options) used by the end-to-end tests
SOCKETS = {
    "echo": ("echo", {}),
    "do_something": ("do_something", {}),
    "add_two": ("add_two", {}),
    "boom": ("boom", {"retries": 2, "backoff": 0.05}),
    "flaky": ("fail_times", {"retries": 3, "backoff": 0.05}),
    "sleep": ("sleep", {}),
    "slow": ("sleep", {"timeout": 0.5}),
    "crash": ("crash", {}),
    "big": ("big", {}),
    "noop": ("noop", {}),
    "total": ("total", {}),
}


def make_repo(dest: Path) -> Path:
    """Copy the sample processor into ``dest`` and commit it as a real git repository."""
    import git

    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    repo = git.Repo.init(dest, initial_branch="main")
    repo.git.add(A=True)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "test")
        cw.set_value("user", "email", "test@example.invalid")
    repo.index.commit("sample processor")
    return dest


def build_network(db_url: str, repo: Path, *, processor: str = "sample", queue_kind: str = "quorum",
                  sockets: dict | None = None) -> None:
    """Register the sample processor and its sockets in the store at ``db_url``."""
    from ectool import network
    from ectool.store import open_store

    open_store(db_url)
    network.add_trust(f"file://{repo}")
    network.add_queue("q", "direct", queue_type=queue_kind)
    network.add_processor(processor, f"file://{repo}", "pyfi.processors.sample")
    for name, (task, opts) in (sockets or SOCKETS).items():
        network.add_socket(name, "q", processor, task, **opts)


@contextmanager
def sample_network(tmp_path: Path, broker_url: str, sockets: dict | None = None, **env_extra: str):
    """A fresh SQLite store holding the sample processor's network, on ``broker_url``;
    yields (env, processor). The test's RabbitMQ queues are deleted afterwards."""
    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    proc = f"sample-{uuid.uuid4().hex[:6]}"
    build_network(db_url, make_repo(tmp_path / "repo"), processor=proc, sockets=sockets)
    try:
        yield env_for(db_url, broker_url, **env_extra), proc
    finally:
        if broker_url.startswith("amqp"):
            from ectool.calls import broker_queue
            from ectool.transport import connect

            with connect(broker_url) as t:
                for name in sockets or SOCKETS:
                    t.delete_queue(broker_queue(name, os.environ["EC_NAMESPACE"]))


def env_for(db_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment for ``ec`` subprocesses; a fresh namespace keeps concurrent test
    runs on one RabbitMQ from consuming each other's queues."""
    env = dict(os.environ, EC_DB=db_url, EC_BROKER=broker_url, NO_COLOR="1",
               EC_NAMESPACE=os.environ.get("EC_NAMESPACE") or f"t{uuid.uuid4().hex[:10]}")
    env.pop("EC_FLOW", None)
    env.update(extra)
    return env


def ec(*args: str, env: dict[str, str], input: bytes | str | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``ec ARGS`` as a real subprocess; stdout/stderr captured as text (bytes if input is bytes)."""
    text = not isinstance(input, bytes)
    return subprocess.run([sys.executable, "-m", "ectool", *args], env=env, input=input,
                          capture_output=True, text=text, timeout=timeout)


@contextmanager
def workers(env: dict[str, str], processor: str = "sample", count: int = 1, *extra: str):
    """Run ``ec worker`` (a supervisor and ``count`` worker processes); stop it by pid."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "ectool", "worker", "-p", processor, "-c", str(count),
                             "--grace", "10", *extra], env=env, stderr=log, text=True)
    proc.stderr_log = log  # callers may read what the workers logged
    try:
        yield proc
    except BaseException:
        _show_log("ec worker", log)
        raise
    finally:
        stop_tree(proc)
        log.close()


def _show_log(what: str, log) -> None:
    """Print a daemon's stderr (pytest shows it with the failure)."""
    log.flush()
    log.seek(0)
    print(f"----- {what} stderr -----\n{log.read()[-20000:]}")


def children(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        return []


def alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a killed child is a zombie until its parent reaps it, and
    ``is_running()`` is still true for it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_children(proc: subprocess.Popen, count: int, timeout: float = 20) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [c for c in children(proc) if alive(c)]
        if len(kids) >= count:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"worker children did not start: {children(proc)}")


def kill_workers(proc: subprocess.Popen, kills: int, count: int = 2, pause: float = 0.4,
                 timeout: float = 60, busy: Callable[[int], bool] | None = None) -> None:
    """kill -9 KILLS worker children of supervisor PROC one after another: each time once
    all COUNT are running again (so the kill lands on a worker that has been serving) and
    PAUSE seconds later, alternating between them. With ``busy`` (pid -> is it running a
    call now?) the victim is one for which it holds, polled until one does: the kill then
    surely lands mid-call, however slowly a restarted worker comes up on a loaded machine.
    A child already killed (a zombie until its parent reaps it) is not picked again; one
    that exits on its own is not counted."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(killed) < kills:
        assert time.monotonic() < deadline, f"killed only {len(killed)} of {kills} workers"
        kids = [k for k in wait_children(proc, count) if k.pid not in killed]
        if len(kids) < count:
            time.sleep(0.05)
            continue
        time.sleep(pause)
        order = kids[len(killed) % len(kids):] + kids[:len(killed) % len(kids)]
        victim = order[0] if busy is None else next((k for k in order if busy(k.pid)), None)
        if victim is None:
            continue
        try:
            os.kill(victim.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.add(victim.pid)


def kill_supervisor(proc: subprocess.Popen, kids: list[psutil.Process]) -> None:
    """kill -9 an ``ec worker`` supervisor and assert its workers ``kids`` die with it (any
    left alive are killed, then reported)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(kids, timeout=60)
    for orphan in alive:
        orphan.kill()
    assert not alive, f"workers outlived their supervisor: {[k.pid for k in alive]}"


def kill_host(proc: subprocess.Popen) -> None:
    """kill -9 an agent and its workers at once (a host dying), by pid."""
    kids = psutil.Process(proc.pid).children(recursive=True)
    for p in [proc, *kids]:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    psutil.wait_procs(kids, timeout=15)


def ec_all(env: dict[str, str], *commands: tuple[str, ...]) -> None:
    """Run each ``ec`` command line, asserting it succeeds."""
    for args in commands:
        done = ec(*args, env=env)
        assert done.returncode == 0, done.stderr


def host_envs(tmp_path: Path, env: dict[str, str]) -> Callable[[str], dict[str, str]]:
    """``env`` with an EC_HOME of its own per host name: agents on one machine, each as on
    a host of its own (give them ``--node``)."""
    def host_env(name: str) -> dict[str, str]:
        home = tmp_path / f"host-{name}"
        home.mkdir(exist_ok=True)
        return dict(env, EC_HOME=str(home))

    return host_env


def dead_letters_where(transport, keep: Callable, at_least: int = 1, timeout: float = 15.0) -> list:
    """The dead letters ``keep`` picks, read again until at least ``at_least`` are there (or
    ``timeout``): ``ec.dead`` is shared by every test on a broker, and on RabbitMQ a reader
    holds what it browses while it reads, so another test reading at the same moment may
    see only part of it."""
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in transport.dead_letters(100_000) if keep(d)]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def stop_tree(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM ``proc`` by its pid (a supervisor stops its children), wait ``grace``, then
    SIGKILL it; every descendant seen before it stopped gets 5 s more, then SIGKILL too
    (they are listed first: a dying parent orphans them). Used by the benchmarks as well."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    for k in kids:
        try:
            k.wait(max(0.0, deadline - time.monotonic()))
        except psutil.TimeoutExpired:
            pass
        except psutil.NoSuchProcess:
            continue
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass
    if proc.stderr:
        proc.stderr.close()


@contextmanager
def agent(env: dict[str, str], *args: str):
    """Run ``ec agent run ARGS`` (the agent daemon); stop it and its workers by pid."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "ectool", "agent", "run", "--interval", "1",
                             "--grace", "10", *args], env=env, stderr=log, text=True)
    proc.stderr_log = log  # callers may read what the agent logged
    seen: set[int] = set()
    try:
        yield proc
    except BaseException:
        _show_log("ec agent", log)
        raise
    finally:
        try:
            seen |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
        stop_tree(proc, grace=20)
        for pid in seen:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        log.close()


def wait_for(predicate, timeout: float = 30, every: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
