"""Where ElasticCode keeps its files (XDG base directories).

``EC_HOME`` relocates every user file at once (tests set it to a temporary directory);
otherwise the usual ``XDG_*`` variables apply.
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    home = os.environ.get("EC_HOME")
    if home:
        return Path(home) / {"XDG_DATA_HOME": "data", "XDG_CONFIG_HOME": "config"}.get(var, "cache")
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def data_dir() -> Path:
    """Embedded databases and state: ``$XDG_DATA_HOME/elasticcode``."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "elasticcode"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/elasticcode`` (holds ``ec.toml``)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "elasticcode"


def cache_dir() -> Path:
    """Repository clones and virtualenvs: ``$XDG_CACHE_HOME/elasticcode``."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "elasticcode"


def config_file() -> Path:
    """The config file: ``EC_CONFIG`` if set, else ``ec.toml`` in :func:`config_dir`."""
    explicit = os.environ.get("EC_CONFIG")
    return Path(explicit) if explicit else config_dir() / "ec.toml"


def private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) for private data: a new directory is 0700, as
    ssh and gpg make theirs; an existing one keeps the mode someone chose for it."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists. An empty file is a valid SQLite
    database, and SQLite gives its -wal and -shm files the database file's mode, so every
    file of a new store is readable by its owner only (calls' arguments and results)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
