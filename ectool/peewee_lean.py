"""Import peewee without the server databases' drivers, in an ``ec`` process whose store
is SQLite.

peewee imports psycopg2 (and with it ssl, libpq, libssl and Kerberos) whenever it is
installed: ~10 ms of a ~100 ms ``ec run`` and ~5.6 MB of every process's RSS, which an
``ec map`` or a worker on the embedded store never uses. So once the ``ec`` command line
knows its store (:attr:`ectool.cli.env.Env.config`), a SQLite one has peewee imported
with those drivers hidden, the documented way (``sys.modules[name] = None`` makes their
import raise ImportError, which peewee takes as "not installed"), and only while peewee
imports: psycopg2 imports normally afterwards, for anyone else. peewee's PostgreSQL
support stays off in such a process, which never opens a PostgreSQL store. Not in
``ec worker``: it may run tasks in its own process, and a task may use peewee with a
PostgreSQL database of its own. A program that imports ``ectool`` as a library gets
peewee whole.
"""

from __future__ import annotations

import sys

#: database drivers peewee imports if it can
SERVER_DRIVERS = ("psycopg2", "psycopg2cffi", "psycopg", "pymysql", "MySQLdb")

#: set by the ``ec`` entry point (``ectool.cli.main``, see :func:`lean_for`); off for library users
lean = False

#: commands that may import user code (tasks) into their own process
RUNS_TASKS = frozenset({"worker"})
#: the ``ec`` group's options that take a value
_VALUED = ("--db", "--broker")


def lean_for(argv: list[str]) -> bool:
    """Whether ``ec ARGV`` may import peewee lean: not when its command runs tasks."""
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return word not in RUNS_TASKS
    return True


def store_known(db_url: str) -> None:
    """The process's store is ``db_url``: on SQLite, in an ``ec`` process, import peewee
    without server drivers (unless it is imported already)."""
    if lean and db_url.startswith("sqlite") and "peewee" not in sys.modules:
        import_without_servers()


def import_without_servers() -> None:
    """``import peewee`` with :data:`SERVER_DRIVERS` hidden while it imports."""
    hidden = [name for name in SERVER_DRIVERS if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))  # type: ignore[arg-type]  # None hides a module
    try:
        import peewee  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
