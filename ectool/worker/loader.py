"""Import a processor's module from a checked-out directory."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import UsageError


def local_path(gitrepo: str) -> Path | None:
    """The working tree for a local repository URL (path or file://, with #subdirectory=)."""
    url, _, fragment = gitrepo.partition("#")
    sub = ""
    for part in fragment.split("&"):
        if part.startswith("subdirectory="):
            sub = part.split("=", 1)[1]
    if url.startswith("file://"):
        path = Path(unquote(urlsplit(url).path))
    elif "://" in url or url.startswith("git@"):
        return None
    else:
        path = Path(url).expanduser()
    return (path / sub) if sub else path


def load_module(module: str, path: Path | None):
    """Import ``module`` with ``path`` first on sys.path."""
    if path is not None:
        if not path.is_dir():
            raise UsageError(f"processor path {path} is not a directory")
        sys.path.insert(0, str(path))
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"cannot import processor module {module!r}: {exc}") from None


def git_commit(path: Path | None) -> str | None:
    """The commit checked out at ``path`` (``git rev-parse HEAD``), with ``-dirty`` appended
    when tracked files differ from it; None when ``path`` is not in a git work tree."""
    import subprocess

    if path is None:
        return None

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return None
    return head + "-dirty" if git("status", "--porcelain", "--untracked-files=no") else head
