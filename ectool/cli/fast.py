"""``ec run SOCKET [WORD...]`` without click: the commonest command line, and the one a
shell pipeline pays for on every call, skips the ~25-35 ms of importing click.

Only that exact form qualifies: ``run`` first, then a socket name and words none of which
starts with ``-`` (a lone ``-``, stdin, is allowed). Anything else (an option, ``--``,
``--help``, a global ``--db``, shell completion) goes to the click command, which behaves
the same for this form: both end in :func:`ectool.cli.runner.run_one`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def simple_run(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """``(socket, words)`` when ``argv`` is the plain ``run SOCKET [WORD...]`` form, else None."""
    if len(argv) < 2 or argv[0] != "run" or "_EC_COMPLETE" in environ:
        return None
    socket, words = argv[1], list(argv[2:])
    if not socket or socket.startswith("-") or any(w.startswith("-") and w != "-" for w in words):
        return None
    return socket, words


def run(socket: str, words: list[str]) -> None:
    """What ``ec run SOCKET WORD...`` does, with no options given."""
    from .env import Env
    from .runner import call_values, run_one

    values, stdin_used = call_values(words, has_kwargs=False)
    env = Env()
    if env.config.db.startswith("sqlite"):
        import_peewee_without_servers()
    run_one(env, socket, values, {}, no_wait=False, timeout=None, as_json=False, verbose=False,
            stdin_used=stdin_used)


#: database drivers peewee imports if it can; a process whose store is SQLite needs none
SERVER_DRIVERS = ("psycopg2", "psycopg2cffi", "psycopg", "pymysql", "MySQLdb")


def import_peewee_without_servers() -> None:
    """Import peewee with its server drivers hidden, for a process whose store is SQLite:
    peewee imports psycopg2 (and ssl with it) when it is installed, ~10 ms of a ~120 ms
    ``ec run``. A driver is hidden the documented way (``sys.modules[name] = None`` makes
    its import raise ImportError, which peewee takes as "not installed") and only while
    peewee imports; PostgreSQL stays unusable through peewee in this process, which never
    opens one."""
    import sys

    if "peewee" in sys.modules:
        return
    hidden = [name for name in SERVER_DRIVERS if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))
    try:
        import peewee  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
