"""``ec db init|migrate|drop|version``."""

from __future__ import annotations

import click

from ..config import mask_url
from ..errors import UsageError
from .env import Env
from .group import pass_env


def _database(env: Env):
    from ..store import open_store

    return open_store(env.config.db, create=False)


@click.group()
def db() -> None:
    """Create, upgrade or drop the store's schema."""


@db.command("init")
@click.option("--broker-setup", is_flag=True,
              help="Also create the broker URL's RabbitMQ vhost and user here (ec broker setup).")
@pass_env
def init(env: Env, broker_setup: bool) -> None:
    """Create the tables (no-op when they exist); whoever runs it becomes the store's admin.

    \b
    On PostgreSQL run it as the role that owns the tables, then for each user:
      CREATE ROLE bob LOGIN;                 -- in psql, as an admin of the server
      ec add role -n callers -p RUN_TASK -p READ_CALL
      ec add user -n bob -r callers          # GRANTs bob exactly what callers imply
    bob then connects as himself (the session user is the identity, never EC_USER)."""
    from ..store import schema

    created = schema.init(_database(env))
    click.echo(f"{'created' if created else 'exists'}: {mask_url(env.config.db)} (schema {schema.CURRENT})", err=True)
    if broker_setup:
        from .broker_cmd import run_setup

        run_setup(env)


@db.command("grant")
@click.argument("users", nargs=-1)
@pass_env
def grant(env: Env, users) -> None:
    """Give users' PostgreSQL roles exactly the table rights their privileges imply
    (default: every user). Run it as the tables' owner, after CREATE ROLE or a migration."""
    from .. import network

    _database(env)
    for note in network.grant(list(users)):
        click.echo(f"ec: note: {note}", err=True)
    click.echo(f"granted: {', '.join(users) if users else 'every user'}", err=True)


@db.command("migrate")
@pass_env
def migrate(env: Env) -> None:
    """Upgrade the schema to this version of ec, one step per version."""
    from ..store import schema

    reached = schema.upgrade(_database(env))
    click.echo(f"schema at version {schema.CURRENT}" + (f" (applied {reached})" if reached else " (nothing to do)"), err=True)


@db.command("version")
@pass_env
def version(env: Env) -> None:
    """Print the store's schema version (empty if none)."""
    from ..store import schema

    v = schema.version(_database(env))
    click.echo("" if v is None else v)


@db.command("drop")
@click.option("--yes", is_flag=True, help="Really drop every table and all data.")
@pass_env
def drop(env: Env, yes: bool) -> None:
    """Drop every table. Needs --yes."""
    from ..store import schema

    if not yes:
        raise UsageError("refusing to drop the store without --yes")
    schema.drop(_database(env))
    click.echo(f"dropped: {mask_url(env.config.db)}", err=True)
