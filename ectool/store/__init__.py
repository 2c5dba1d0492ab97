"""Open the model store named by a URL and make sure its schema is current.

``sqlite:///path`` gives a SQLite file in WAL mode with a busy timeout;
``postgresql://user:pw@host:port/db[?schema=NAME]`` gives PostgreSQL. Connection
failures become :class:`~ectool.errors.Unreachable` (exit 3).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from peewee import Database, OperationalError, PostgresqlDatabase, SqliteDatabase

from ..errors import ConfigError, Unreachable
from .models import db

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 60_000,
    "foreign_keys": 1,
    "synchronous": "normal",
}


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL: ``sqlite:///rel.db`` is relative, ``sqlite:////abs.db`` absolute."""
    rest = url.split("://", 1)[1]
    return Path(unquote(rest[1:] if rest.startswith("/") else rest)).expanduser()


def make_database(url: str) -> Database:
    """Build (not connect) a peewee database for ``url``."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, timeout=60)
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
    try:
        database.connect(reuse_if_open=True)
    except OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreachable(f"store unreachable ({_describe(url)}): {first}") from None
    if create:
        schema.ensure(database)
    return database


def close_store() -> None:
    """Close the bound database connection, if any."""
    if db.obj is not None and not db.obj.is_closed():
        db.obj.close()


def _describe(url: str) -> str:
    from ..config import mask_url

    return mask_url(url)
