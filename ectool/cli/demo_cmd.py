"""``ec demo``."""

from __future__ import annotations

import click

from ..errors import TaskFailed
from .env import Env, pass_env


@click.command()
@click.option("-w", "--workers", default=2, show_default=True, type=int, help="Worker processes to start.")
@pass_env
def demo(env: Env, workers: int) -> None:
    """Build the seed's network on the sample processor, run the seed's shell examples,
    and stop the workers it started. Uses the configured store and broker (the embedded
    SQLite default unless EC_DB/EC_BROKER say otherwise)."""
    from ..demo import run_demo

    env.store()
    if run_demo(env.config, workers):
        raise TaskFailed("some demo steps failed")
