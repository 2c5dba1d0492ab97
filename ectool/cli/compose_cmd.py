"""``ec compose apply|export``."""

from __future__ import annotations

import sys

import click

from .env import Env
from .group import pass_env


@click.group()
def compose() -> None:
    """Declarative networks: apply or export a TOML file of queues, processors, sockets, plugs."""


@compose.command("apply")
@click.argument("file", type=click.File("rb"))
@click.option("--json", "as_json", is_flag=True, help="Report as JSON.")
@pass_env
def apply(env: Env, file, as_json) -> None:
    """Create or update everything in FILE (- for stdin) in one transaction; idempotent."""
    from .. import compose as lib
    from ..output import dumps
    from .network_cmd import changed

    env.store()
    report = lib.apply(lib.parse(file.read(), getattr(file, "name", "compose file")))
    changed(env)
    if as_json:
        sys.stdout.write(dumps(report) + "\n")
        return
    for what in ("created", "updated"):
        for item in report[what]:
            click.echo(f"{what} {item}", err=True)
    click.echo(f"{len(report['created'])} created, {len(report['updated'])} updated, "
               f"{len(report['unchanged'])} unchanged", err=True)


@compose.command("export")
@pass_env
def export(env: Env) -> None:
    """Write the current network as a compose file on stdout."""
    from .. import compose as lib

    env.store()
    sys.stdout.write(lib.export())
