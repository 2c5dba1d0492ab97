"""``ec config show|init|path``."""

from __future__ import annotations

import click

from .. import config as config_lib
from .. import paths
from ..output import render_one
from .env import Env
from .group import pass_env


@click.group()
def config() -> None:
    """Show or create the configuration (flags > EC_* env > ec.toml > defaults)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--sources", is_flag=True, help="Also say where each value came from.")
@pass_env
def show(env: Env, as_json: bool, sources: bool) -> None:
    """Print the resolved configuration, passwords masked."""
    values = env.config.masked()
    if sources:
        values["sources"] = env.config.sources
    render_one(values, as_json=as_json)


@config.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(force: bool) -> None:
    """Write a commented ec.toml with the defaults."""
    click.echo(config_lib.init_file(force=force))


@config.command("path")
def path() -> None:
    """Print where ElasticCode keeps its files."""
    render_one({"config": str(paths.config_file()), "data": str(paths.data_dir()),
                "cache": str(paths.cache_dir())})
