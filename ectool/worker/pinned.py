"""Pinned calls: run a call at the commit its message names (``ec replay``), not the
worker's own.

A worker that receives a call pinned to another commit of its processor gets a deployment
of that commit on demand, as an agent would (:mod:`agentd.deploy`: a bare clone, a
detached worktree and a virtualenv per processor+commit, all cached on the host), and runs
the call there in an executor of its own. Deployments made this way are bounded:
``EC_REPLAY_KEEP`` (default 4) per repository per host, the least recently used removed
first (never the commit the processor is deployed at). A file lock per repository keeps
concurrent builders (several workers, several agents' workers) from building or pruning
the same deployment at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import paths

log = logging.getLogger("ec.worker")
KEEP = 4  # pinned deployments kept per repository per host (EC_REPLAY_KEEP)
LIVE = 2  # pinned executors a worker keeps running (each is a process)


class PinError(Exception):
    """A pinned commit cannot be deployed here (gone from the repository, fails to build)."""


def same_commit(pin: str, commit: str | None) -> bool:
    """Does a worker at ``commit`` run code pinned to ``pin``? A dirty tree is not its commit."""
    if not commit or commit.endswith("-dirty"):
        return False
    return commit.startswith(pin) or pin.startswith(commit)


def evict(kept: list[str], keep: int, protect: set[str]) -> list[str]:
    """Which of ``kept`` (least recently used first) to remove so at most ``keep`` remain,
    never one in ``protect`` (pure)."""
    extra = len(kept) - max(keep, 1)
    out = []
    for sha in kept:
        if extra <= 0:
            break
        if sha not in protect:
            out.append(sha)
            extra -= 1
    return out


def keep_limit() -> int:
    try:
        return max(1, int(os.environ.get("EC_REPLAY_KEEP") or KEEP))
    except ValueError:
        return KEEP


def _dir(gitrepo: str) -> Path:
    return paths.cache_dir() / "pinned" / hashlib.sha256(gitrepo.encode()).hexdigest()[:16]


@contextlib.contextmanager
def repo_lock(gitrepo: str) -> Iterator[Path]:
    """An exclusive lock on ``gitrepo``'s pinned deployments on this host; yields its directory."""
    where = _dir(gitrepo)
    where.mkdir(parents=True, exist_ok=True)
    with open(where / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield where
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def deploy_pinned(gitrepo: str, sha: str, module: str, runtime: str, protect: set[str]) -> Any:
    """A deployment (:class:`agentd.deploy.Deployment`) of ``gitrepo`` at ``sha``, built
    if need be; older pinned deployments beyond the limit are removed."""
    from agentd import deploy

    with repo_lock(gitrepo) as where:
        book = where / "kept.json"
        kept: list[str] = json.loads(book.read_text()) if book.exists() else []
        try:
            dep = deploy.deploy(gitrepo, None, sha, module, runtime)
        except deploy.DeployError as exc:
            raise PinError(f"cannot deploy commit {sha}: {exc}") from None
        kept = [k for k in kept if k != dep.commit] + [dep.commit]
        for old in evict(kept, keep_limit(), protect | {dep.commit}):
            _remove(old)
            kept.remove(old)
        book.write_text(json.dumps(kept))
        return dep


def _remove(sha: str) -> None:
    """Remove a pinned deployment's worktree and virtualenvs (the bare clone prunes the
    worktree's record on its next ``git worktree add``)."""
    cache = paths.cache_dir()
    shutil.rmtree(cache / "src" / sha, ignore_errors=True)
    for env in (cache / "venvs").glob(f"{sha[:16]}-*"):
        shutil.rmtree(env, ignore_errors=True)
    log.info("removed the pinned deployment at %s", sha[:12])


class Pinned:
    """The executors of one worker's pinned commits (at most :data:`LIVE` at a time)."""

    def __init__(self, gitrepo: str, module: str, runtime: str, memory_limit: int | None,
                 protect: set[str]) -> None:
        self.gitrepo, self.module, self.runtime = gitrepo, module, runtime
        self.memory_limit = memory_limit
        self.protect = {p for p in protect if p}
        self.executors: dict[str, tuple[Any, float]] = {}

    def executor(self, sha: str) -> tuple[str, Any]:
        """(the full commit, an executor running code at ``sha``); :class:`PinError` if
        it cannot be had."""
        for full, (ex, _) in self.executors.items():
            if full.startswith(sha):
                self.executors[full] = (ex, time.monotonic())
                return full, ex
        from ..errors import UsageError
        from .executor import ExecExecutor, SubprocessExecutor

        dep = deploy_pinned(self.gitrepo, sha, self.module, self.runtime, self.protect)
        try:
            # always a process of its own: the worker has imported its own commit's module
            # under the same name (and its venv's python may be the worker's own)
            ex = ExecExecutor(dep.src, self.memory_limit) if self.runtime == "exec" else \
                SubprocessExecutor(dep.python, self.module, dep.src, self.memory_limit)
        except UsageError as exc:
            raise PinError(f"cannot start commit {dep.commit}: {exc}") from None
        while len(self.executors) >= LIVE:
            oldest = min(self.executors, key=lambda k: self.executors[k][1])
            self.executors.pop(oldest)[0].close()
        self.executors[dep.commit] = (ex, time.monotonic())
        return dep.commit, ex

    def close(self) -> None:
        for ex, _ in self.executors.values():
            ex.close()
        self.executors.clear()
