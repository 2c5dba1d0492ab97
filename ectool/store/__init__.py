"""Open the model store named by a URL and make sure its schema is current.

``sqlite:///path`` gives a SQLite file in WAL mode with a busy timeout;
``postgresql://user:pw@host:port/db[?schema=NAME]`` gives PostgreSQL. Connection
failures become :class:`~ectool.errors.Unreachable` (exit 3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from peewee import Database, InterfaceError, OperationalError, PostgresqlDatabase, SqliteDatabase

from ..errors import ConfigError, Unreachable
from ..paths import private_dir, private_file
from .models import db, on_sqlite

SQLITE_PRAGMAS: dict[str, Any] = {
    "journal_mode": "wal",
    "busy_timeout": 60_000,
    "foreign_keys": 1,
    "synchronous": "normal",
}


class SqliteImmediateDatabase(SqliteDatabase):
    """Transactions take SQLite's write lock as they begin (BEGIN IMMEDIATE).

    A deferred transaction that reads and then writes, after another connection committed
    in between, fails at once with "database is locked": SQLite cannot wait for it, so the
    busy timeout does not help (an agent registering while ``ec run`` inserted a call died
    of it). Taking the lock up front makes every transaction wait its turn instead."""

    def begin(self, lock_type: str | None = None) -> None:
        # begin, not transaction(): ``db.atomic()`` on the models' DatabaseProxy begins
        # through the proxy with no lock type, so an override of transaction() was never
        # reached and every transaction was deferred
        super().begin(lock_type or "IMMEDIATE")


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL: ``sqlite:///rel.db`` is relative, ``sqlite:////abs.db`` absolute."""
    rest = url.split("://", 1)[1]
    return Path(unquote(rest[1:] if rest.startswith("/") else rest)).expanduser()


def make_database(url: str) -> Database:
    """Build (not connect) a peewee database for ``url``."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = sqlite_path(url)
        try:
            private_dir(path.parent)
            private_file(path)
        except OSError as exc:
            raise Unreachable(f"store unreachable ({_describe(url)}): cannot create {path.parent}: "
                              f"{exc.strerror or exc}") from None
        # a small statement cache: the batch statements (a multi-row INSERT, an IN list)
        # come in as many shapes as batch sizes, and sqlite3 keeps 128 compiled by default:
        # ~20 MB of a long `ec map` (62 -> 44 MB peak RSS over 200k lines with 16)
        return SqliteImmediateDatabase(str(path), pragmas=SQLITE_PRAGMAS, timeout=60, cached_statements=32)
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query))
        schema = params.pop("schema", None)
        if schema:
            params["options"] = f"-c search_path={schema}"
        return PostgresqlDatabase(
            unquote(parts.path.lstrip("/")) or "postgres",
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            connect_timeout=int(params.pop("connect_timeout", 5)),
            autoconnect=True,
            **params,
        )
    raise ConfigError(f"unsupported store URL {url!r}")


def open_store(url: str, *, create: bool = True, user: str | None = None) -> Database:
    """Bind the models to ``url``, connect, and create the schema on first use.

    An existing store with an older schema is refused with a pointer to ``ec db migrate``.
    """
    from .. import security
    from . import schema

    security.set_user(security.identify(url, user))
    database = make_database(url)
    db.initialize(database)
    # Connecting to SQLite sets its pragmas: switching a new file to WAL takes the file's
    # lock, and SQLite refuses at once (its busy timeout does not apply) while another
    # process is creating the schema in it. Such a lock passes: try again for a while.
    deadline = time.monotonic() + SQLITE_PRAGMAS["busy_timeout"] / 1000
    while True:
        try:
            database.connect(reuse_if_open=True)
            break
        except OperationalError as exc:
            busy = any(word in str(exc).lower() for word in ("locked", "busy"))
            if isinstance(database, SqliteDatabase) and busy and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Unreachable(f"store unreachable ({_describe(url)}): {first}") from None
    if isinstance(database, PostgresqlDatabase):
        # the acting user is the role the server authenticated, whatever the URL, PGUSER,
        # EC_USER or the config say (libpq falls back to PGUSER and the OS user)
        security.set_user(database.execute_sql("SELECT session_user").fetchone()[0])
    if create:
        schema.ensure(database)
    return database


T = TypeVar("T")
log = logging.getLogger("ec.store")

#: SQLite errors that pass (a lock held too long, a file briefly unavailable); other SQLite
#: OperationalErrors ("no such table", syntax) are bugs and must not be retried
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


def transient(exc: BaseException) -> bool:
    """Is ``exc`` a store outage (connection lost, server restarting, lock timeout) rather
    than a bad statement? Only outages are worth waiting out."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    if on_sqlite():
        return any(word in str(exc).lower() for word in _SQLITE_TRANSIENT)
    return True  # psycopg2's OperationalError is the connection class (lost, refused, shutdown)


def reconnect() -> None:
    """Drop the (possibly dead) connection; the next query opens a fresh one."""
    database = db.obj
    if database is None:
        return
    try:
        database.close()
    except Exception:  # noqa: BLE001 - a dead connection may fail to close; forget it
        database._state.reset()


def retrying(fn: Callable[[int], T], *, what: str, stop: Callable[[], bool] = lambda: False,
             max_delay: float = 5.0) -> T:
    """Run ``fn(attempt)`` until it gets through a store outage (attempt 0, 1, ...).

    Transient errors (see :func:`transient`) reconnect and retry with exponential backoff
    up to ``max_delay``; anything else, or an outage once ``stop()`` is true, is raised.
    ``fn`` must be safe to repeat: the attempt number lets it choose a recovering path.
    """
    attempt, delay, since = 0, 0.05, None
    while True:
        try:
            result = fn(attempt)
        except (OperationalError, InterfaceError) as exc:
            if not transient(exc) or stop():
                raise
            if since is None:
                since = time.monotonic()
                log.warning("store unavailable during %s (%s); waiting for it", what,
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            reconnect()
            time.sleep(delay)
            attempt, delay = attempt + 1, min(max_delay, delay * 2)
            continue
        if since is not None:
            log.warning("store back after %.1fs (%s)", time.monotonic() - since, what)
        return result


def close_store() -> None:
    """Close the bound database connection, if any."""
    if db.obj is not None and not db.obj.is_closed():
        db.obj.close()


def _describe(url: str) -> str:
    from ..config import mask_url

    return mask_url(url)
