"""``ec demo``."""

from __future__ import annotations

import click

from ..errors import TaskFailed
from .env import Env
from .group import pass_env


@click.command()
@click.option("-w", "--workers", default=2, show_default=True, type=int,
              help="Worker processes (cores) for the sample processor.")
@click.option("--keep", is_flag=True, help="Leave the agent the demo started running.")
@pass_env
def demo(env: Env, workers: int, keep: bool) -> None:
    """Build the seed's network on the sample processor, start a local agent if none is
    online, run the seed's shell examples and its pipeline/parallel/funnel workflow, show
    the call graph, and stop the agent it started (unless --keep). Uses the configured
    store and broker (the embedded SQLite default unless EC_DB/EC_BROKER say otherwise)."""
    from ..demo import run_demo

    env.store()
    if run_demo(env.config, workers, keep=keep):
        raise TaskFailed("some demo steps failed")
