"""Deployment from real git repositories into isolated virtualenvs."""

from __future__ import annotations

import json
import subprocess
import sys

import git
import pytest

from agentd.deploy import DeployError, deploy, split_url
from ectool.worker.executor import SubprocessExecutor
from helpers import make_repo


def test_split_url():
    assert split_url("https://h/r.git#subdirectory=pkg/sub") == ("https://h/r.git", "pkg/sub")
    assert split_url("git@github.com:me/r.git") == ("git@github.com:me/r.git", "")
    url, sub = split_url("/tmp/some/repo")
    assert url == "file:///tmp/some/repo" and sub == ""
    with pytest.raises(DeployError):
        split_url("https://h/r.git#subdirectory=../../etc")


def test_cold_then_warm_deploy_reuses_everything(tmp_path):
    repo = make_repo(tmp_path / "repo")
    first = deploy(str(repo), "main", None, "pyfi.processors.sample")
    marker = (first.python.rsplit("/bin/", 1)[0]) + "/.ec-ready"
    stamp = __import__("os").stat(marker).st_mtime_ns
    again = deploy(str(repo), "main", None, "pyfi.processors.sample")
    assert again == first
    assert __import__("os").stat(marker).st_mtime_ns == stamp  # the env was not rebuilt
    assert first.commit == git.Repo(repo).head.commit.hexsha


def test_without_a_branch_the_repository_head_is_deployed(tmp_path):
    """A repository whose default branch is not main: no branch named deploys its HEAD
    (as git clone does), a named branch that branch, and a later change of the origin's
    HEAD is followed on the next fetch."""
    repo = make_repo(tmp_path / "repo")
    r = git.Repo(repo)
    r.git.branch("-m", "main", "master")
    master = r.head.commit.hexsha
    r.git.checkout("-b", "dev")
    (repo / "dev.txt").write_text("dev")
    r.git.add(A=True)
    dev = r.index.commit("on dev").hexsha
    r.git.checkout("master")
    d = deploy(str(repo), None, None, "pyfi.processors.sample")
    assert (d.branch, d.commit) == ("master", master)
    d = deploy(str(repo), "dev", None, "pyfi.processors.sample")
    assert (d.branch, d.commit) == ("dev", dev)
    r.git.checkout("dev")  # the origin's default branch is now dev
    d = deploy(str(repo), None, None, "pyfi.processors.sample")
    assert (d.branch, d.commit) == ("dev", dev)
    with pytest.raises(DeployError, match="branch 'main' does not exist"):
        deploy(str(repo), "main", None, "pyfi.processors.sample")


def test_subdirectory_and_pinned_commit(tmp_path):
    import shutil

    from helpers import SAMPLE

    outer = tmp_path / "outer"
    shutil.copytree(SAMPLE, outer / "procs", ignore=shutil.ignore_patterns("__pycache__"))
    r = git.Repo.init(outer, initial_branch="main")
    r.git.add(A=True)
    with r.config_writer() as cw:
        cw.set_value("user", "name", "t")
        cw.set_value("user", "email", "t@example.invalid")
    old = r.index.commit("one").hexsha
    (outer / "procs" / "extra.txt").write_text("x")
    r.git.add(A=True)
    r.index.commit("two")
    d = deploy(f"{outer}#subdirectory=procs", "main", old, "pyfi.processors.sample")
    assert d.commit == old and d.src.name == "procs" and not (d.src / "extra.txt").exists()


@pytest.mark.slow
def test_processor_pinning_a_library_ec_uses_gets_its_own_version(tmp_path):
    """The processor pins click 8.1.7 (ec runs a newer click): each keeps its own."""
    repo = make_repo(tmp_path / "repo")
    (repo / "pyproject.toml").write_text(
        (repo / "pyproject.toml").read_text().replace("dependencies = []", 'dependencies = ["click==8.1.7"]'))
    (repo / "pyfi/processors/sample.py").write_text(
        (repo / "pyfi/processors/sample.py").read_text()
        + "\n\ndef click_version():\n    import click\n    return click.__version__\n")
    r = git.Repo(repo)
    r.git.add(A=True)
    r.index.commit("pin click")
    from importlib.metadata import version

    ours = version("click")
    assert ours != "8.1.7"
    d = deploy(str(repo), "main", None, "pyfi.processors.sample")
    ex = SubprocessExecutor(d.python, "pyfi.processors.sample", d.src)
    try:
        out = ex.run("click_version", [], {}, None)
    finally:
        ex.close()
    assert out == {"status": "done", "result": json.dumps("8.1.7")}
    # the env holds no ec packages, and ec's own click is untouched
    probe = subprocess.run([d.python, "-I", "-c", "import peewee"], capture_output=True)
    assert probe.returncode != 0
    done = subprocess.run([sys.executable, "-c", "from importlib.metadata import version; print(version('click'))"],
                          capture_output=True, text=True)
    assert done.stdout.strip() == ours


def test_executor_survives_bad_calls_and_reports_death(tmp_path):
    repo = make_repo(tmp_path / "repo")
    d = deploy(str(repo), "main", None, "pyfi.processors.sample")
    ex = SubprocessExecutor(d.python, "pyfi.processors.sample", d.src)
    try:
        assert ex.run("add_two", [1, 2], {}, None) == {"status": "done", "result": "3"}
        assert ex.run("add_two", [1], {}, None)["final"] is True
        assert ex.run("echo", [b"\xff\x00"], {}, None)["result"] == '{"$bytes":"/wA="}'
        assert ex.run("sleep", [3], {}, 0.2)["error_type"] == "TimeoutError"
        from ectool.worker.executor import ExecutorDied

        with pytest.raises(ExecutorDied):
            ex.run("crash", ["kill"], {}, None)
        assert ex.run("add_two", [2, 2], {}, None)["result"] == "4"  # restarted on demand
    finally:
        ex.close()
