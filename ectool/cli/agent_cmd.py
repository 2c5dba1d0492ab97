"""``ec agent run|ls``."""

from __future__ import annotations

import click

from ..output import render
from .env import Env
from .group import pass_env


@click.group()
def agent() -> None:
    """Run an agent here, or list agents."""


def _run_command():
    from agentd.main import run_agent, with_agent_options

    @agent.command("run")
    @with_agent_options
    @pass_env
    def run(env: Env, name, node, cpus, interval, grace) -> None:
        """Run the agent in the foreground (same as ec-agentd)."""
        run_agent(env.flags["db"], env.flags["broker"], name, node, cpus, interval, grace)

    return run


_run_command()


@agent.command("ls")
@click.option("--json", "as_json", is_flag=True)
@pass_env
def ls(env: Env, as_json: bool) -> None:
    """List agents: node, pid, cores, status (online, offline, lost), last heartbeat,
    placed processors."""
    from ..calls import list_runtime

    env.store()
    render(list_runtime("agent"), AGENT_COLUMNS, as_json=as_json)


AGENT_COLUMNS = ["name", "node", "pid", "cpus", "status", "heartbeat", "processors"]
