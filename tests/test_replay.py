"""Provenance and ``ec replay`` (issue 19): every call records the commit that ran it, and a
replay runs at the original's commit while the processor's new commit serves new calls.

The processor is a real git repository in tmp whose function returns the hash of its own
source as imported, so a result says which code produced it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import uuid

import pytest

from ectool.calls import Client
from ectool.config import load
from ectool.replay import plan_pins, side_by_side
from ectool.store import open_store
from ectool.store.models import Call
from ectool.worker.pinned import evict, same_commit
from ectool.workflow import leaves
from helpers import ec, env_for, stop_tree, wait_for, workers

SOURCE = '''"""Returns the hash of its own source (version {v})."""
import hashlib
import time
from pathlib import Path

SOURCE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def source(*args):
    return SOURCE


def slow(seconds, *args):
    time.sleep(seconds)
    return SOURCE
'''


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit_version(repo, v: str) -> tuple[str, str]:
    """Write version ``v`` of the module and commit it: (sha, hash of the source)."""
    text = SOURCE.format(v=v)
    (repo / "hashproc.py").write_text(text)
    git(repo, "add", "hashproc.py")
    git(repo, "commit", "-q", "-m", f"version {v}")
    return git(repo, "rev-parse", "HEAD"), hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def net(tmp_path):
    from ectool import network

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "test")
    git(repo, "config", "user.email", "test@example.invalid")
    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    open_store(db_url)
    network.add_trust(f"file://{repo}")
    network.add_queue("q", "direct")
    proc = f"hash-{uuid.uuid4().hex[:6]}"
    network.add_processor(proc, f"file://{repo}", "hashproc")
    network.add_socket("src", "q", proc, "source")
    network.add_socket("slow", "q", proc, "slow")
    yield env_for(db_url, f"sqlite:///{tmp_path / 'queue.db'}"), proc, repo


def run(env, *args: str) -> subprocess.CompletedProcess:
    return ec(*args, env=env, timeout=180)


def row(cid: str) -> Call:
    return Call.get_by_id(cid)


def test_each_call_records_its_commit_and_a_replay_runs_at_it(net):
    env, proc, repo = net
    a, hash_a = commit_version(repo, "A")
    client = Client(load(db=env["EC_DB"], broker=env["EC_BROKER"]))
    with contextlib.ExitStack() as stack:
        worker_a = stack.enter_context(workers(env, proc, 1))
        at_a = [client.call("src", [i], timeout=60) for i in range(3)]
        assert [o.result for o in at_a] == [hash_a] * 3
        # the processor moves to B while a call runs at A
        slow_id = client.submit("slow", [([1.5], {})])[0]
        wait_for(lambda: row(slow_id).status == "running", what="the slow call running at A")
        b, hash_b = commit_version(repo, "B")
        with workers(env, proc, 1):
            assert client.wait([slow_id], 60)[slow_id].result == hash_a
            stop_tree(worker_a)  # only B serves from now on
            at_b = [client.call("src", [i], timeout=60) for i in range(2)]
            assert [o.result for o in at_b] == [hash_b] * 2
            for o in at_a:
                assert (row(o.id).processor, row(o.id).commit, row(o.id).runtime) == (proc, a, "python")
            assert row(slow_id).commit == a
            assert {row(o.id).commit for o in at_b} == {b}

            # a replay of an A call runs at A while B goes on serving new calls
            done = run(env, "replay", at_a[0].id, "--wait", "--json")
            assert done.returncode == 0, done.stderr
            out = json.loads(done.stdout)
            again = row(out["id"])
            assert out["result"] == hash_a
            assert (again.replay_of, again.commit, again.socket) == (at_a[0].id, a, "src")
            assert json.loads(again.args)["args"] == [0]
            assert client.call("src", [9], timeout=60).result == hash_b

            # --diff: the same at A (exit 0); at today's code another hash (exit 1)
            same = run(env, "replay", at_a[1].id, "--diff")
            assert same.returncode == 0, same.stderr
            assert hash_a in same.stdout and a[:8] in same.stdout
            differs = run(env, "replay", at_a[1].id, "--current", "--diff", "--json")
            assert differs.returncode == 1, differs.stderr
            body = json.loads(differs.stdout)
            assert (body["same"], body["original"]["result"], body["replay"]["result"]) == (False, hash_a, hash_b)
            assert body["replay"]["commit"] == b
            at = run(env, "replay", at_b[0].id, "--at", a[:10], "--wait")
            assert (at.returncode, at.stdout.strip()) == (0, hash_a), at.stderr

            # a whole workflow, each step at the commit it ran at
            wf = client.engine.submit({"t": "pipe", "steps": [{"t": "call", "socket": "src"},
                                                              {"t": "call", "socket": "src"}]})
            assert client.wait([wf], 60)[wf].result == hash_b
            git(repo, "commit", "-q", "--allow-empty", "-m", "C")  # the deployment moves on again
            replayed = run(env, "replay", wf, "--diff", "--json")
            assert replayed.returncode == 0, replayed.stdout + replayed.stderr
            new_wf = json.loads(replayed.stdout)["id"]
            steps = [c for c in Call.select().where(Call.root == new_wf) if c.id != new_wf]
            assert len(steps) == 2 and {c.commit for c in steps} == {b}
            assert row(new_wf).replay_of == wf

    # provenance is shown: ec show call, ec ls calls --json, --commit
    shown = json.loads(run(env, "show", "call", slow_id, "--json").stdout)
    assert (shown["processor"], shown["commit"], shown["runtime"]) == (proc, a, "python")
    human = run(env, "show", "call", slow_id).stdout
    assert a in human
    listed = json.loads(run(env, "ls", "calls", "--json", "--commit", a[:7]).stdout)
    ids = {c["id"] for c in listed}
    assert {o.id for o in at_a} | {slow_id, out["id"]} <= ids
    assert not ids & {o.id for o in at_b}
    assert all(c["commit"] == a for c in listed)
    client.close()


def test_bad_replays_are_usage_errors(net):
    env, proc, repo = net
    a, _ = commit_version(repo, "A")
    client = Client(load(db=env["EC_DB"], broker=env["EC_BROKER"]))
    try:
        with workers(env, proc, 1):
            cid = client.call("src", [1], timeout=60).id
            # a commit whose code cannot run: the replay fails (not retried), naming it
            (repo / "hashproc.py").write_text("this is not python\n")
            git(repo, "commit", "-q", "-am", "broken")
            broken = git(repo, "rev-parse", "HEAD")
            failed = run(env, "replay", cid, "--at", broken, "--wait", "--timeout", "120")
            assert failed.returncode == 1, failed.stderr
            assert "PinError" in failed.stderr and broken in failed.stderr
            assert client.call("src", [2], timeout=60).ok  # the worker serves on, at A
            git(repo, "revert", "--no-edit", "HEAD")
    finally:
        client.close()
    unknown = run(env, "replay", "no-such-call")
    assert unknown.returncode == 2 and "no-such-call" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    both = run(env, "replay", cid, "--at", a, "--current")
    assert both.returncode == 2 and "not both" in both.stderr
    bogus = run(env, "replay", cid, "--at", "0123456789abcdef0123")
    assert bogus.returncode == 2 and "0123456789abcdef0123" in bogus.stderr
    # a commit since dropped from the repository (a branch deleted, history rewritten)
    git(repo, "checkout", "-q", "-b", "side")
    gone, _ = commit_version(repo, "gone")
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "side")
    Call.update(commit=gone).where(Call.id == cid).execute()
    before = Call.select().count()
    missing = run(env, "replay", cid)
    assert missing.returncode == 2, missing.stderr
    assert gone in missing.stderr and "no longer exists" in missing.stderr
    assert Call.select().count() == before  # nothing was submitted
    bad_filter = run(env, "ls", "calls", "--commit", "xyz")
    assert bad_filter.returncode == 2 and "xyz" in bad_filter.stderr


def test_pinned_deployments_are_bounded_per_repository(net, monkeypatch):
    """EC_REPLAY_KEEP=2: a third pinned commit removes the least recently used one's
    worktree and virtualenv, never a protected (deployed) one."""
    from ectool import paths
    from ectool.worker.pinned import deploy_pinned

    _, _, repo = net
    shas = [commit_version(repo, v)[0] for v in "ABCD"]
    monkeypatch.setenv("EC_REPLAY_KEEP", "2")
    url = f"file://{repo}"
    for sha in shas[:3]:
        dep = deploy_pinned(url, sha, "hashproc", "python", protect={shas[0]})
        assert dep.commit == sha and (dep.src / "hashproc.py").exists()
    src = paths.cache_dir() / "src"
    assert {p.name for p in src.iterdir()} == {shas[0], shas[2]}  # B went: A is protected
    deploy_pinned(url, shas[3][:10], "hashproc", "python", protect=set())
    assert {p.name for p in src.iterdir()} == {shas[2], shas[3]}
    assert not list((paths.cache_dir() / "venvs").glob(f"{shas[0][:16]}-*"))


@pytest.mark.parametrize("kept, keep, protect, out", [
    (["a", "b", "c"], 4, set(), []),
    (["a", "b", "c", "d", "e"], 4, set(), ["a"]),
    (["a", "b", "c", "d", "e", "f"], 4, {"a"}, ["b", "c"]),
    (["a", "b"], 1, {"a", "b"}, []),
    (["a", "b", "c"], 0, set(), ["a", "b"]),  # at least one is kept
])
def test_pinned_deployments_evicted_least_recent_first(kept, keep, protect, out):
    assert evict(kept, keep, protect) == out


@pytest.mark.parametrize("pin, commit, same", [
    ("a" * 40, "a" * 40, True), ("a" * 12, "a" * 40, True), ("a" * 40, "a" * 40 + "-dirty", False),
    ("a" * 40, None, False), ("b" * 40, "a" * 40, False),
])
def test_a_worker_runs_a_pin_itself_only_at_that_clean_commit(pin, commit, same):
    assert same_commit(pin, commit) is same


def test_plan_pins_and_side_by_side():
    plan = {"t": "pipe", "steps": [{"t": "call", "socket": "s"},
                                   {"t": "par", "members": [{"t": "call", "socket": "t"}, {"t": "call", "socket": "u"}]}]}
    assert [p for p, _ in leaves(plan)] == [(0,), (1, 0), (1, 1)]
    pinned = plan_pins(plan, {(0,): "a", (1, 1): "b"})
    assert [pinned["steps"][0].get("pin"), pinned["steps"][1]["members"][0].get("pin"),
            pinned["steps"][1]["members"][1].get("pin")] == ["a", None, "b"]
    assert "pin" not in plan["steps"][0]  # the original plan is left alone
    lines = side_by_side(("x", "1\n2"), ("y", "1\n3"), width=3)
    assert lines == ["x     y", "-     -", "1     1", "2   | 3"]
