"""``ec dash``: the live dashboard (the only command that imports Textual)."""

from __future__ import annotations

import click

from .env import Env
from .group import pass_env


@click.command()
@click.option("--refresh", default=2.0, show_default=True, type=float,
              help="Seconds between reads of the store.")
@click.option("--no-events", is_flag=True, help="Do not follow the event stream (store reads only).")
@pass_env
def dash(env: Env, refresh, no_events) -> None:
    """The live dashboard: processors (with start/stop/pause/resume/restart), queues, agents
    and workers, recent calls and their graphs, events and plugs. c runs a socket, q quits."""
    env.store()
    from ..dash import make_app

    make_app(env.config, refresh=max(0.5, refresh), follow=not no_events).run()
