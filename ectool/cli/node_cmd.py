"""``ec node ls|cordon|uncordon|drain``: operating hosts (over :mod:`ectool.nodes`)."""

from __future__ import annotations

import click

from ..output import render, render_one
from . import complete
from .env import Env, changed
from .group import pass_env

#: what `ec ls nodes` and `ec node ls` show
NODE_COLUMNS = ["name", "state", "cpus", "load", "agents", "workers", "processors"]
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


@click.group()
def node() -> None:
    """Hosts: list them, keep new work off one (cordon), or empty one (drain).

    \b
    A node is shown online, cordoned, draining, drained, offline (its agents stopped)
    or lost (its agents went silent past EC_AGENT_STALE). See elasticcode(7), PLACEMENT.
    """


@node.command("ls")
@json_option
@pass_env
def ls(env: Env, as_json: bool) -> None:
    """List nodes: state, cores, load, agents, live workers, processors running there."""
    from ..calls import list_runtime

    env.store()
    render(list_runtime("node"), NODE_COLUMNS, as_json=as_json)


def _change(env: Env, name: str, action: str, as_json: bool) -> None:
    from .. import nodes

    env.store()
    nodes.set_state(name, action)
    changed(env)
    row = nodes.row(name)
    if as_json:
        render_one(row, as_json=True)
    else:
        click.echo(f"node {name}: {row['state']}", err=True)


@node.command("cordon")
@click.argument("name", shell_complete=complete.nodes)
@json_option
@pass_env
def cordon(env: Env, name: str, as_json: bool) -> None:
    """Place no new work on node NAME; what runs there keeps running."""
    _change(env, name, "cordon", as_json)


@node.command("uncordon")
@click.argument("name", shell_complete=complete.nodes)
@json_option
@pass_env
def uncordon(env: Env, name: str, as_json: bool) -> None:
    """Make node NAME schedulable again (after cordon or drain)."""
    _change(env, name, "uncordon", as_json)


@node.command("drain")
@click.argument("name", shell_complete=complete.nodes)
@click.option("--wait", is_flag=True, help="Wait until nothing runs on NAME any more.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds (exit 4).")
@json_option
@pass_env
def drain(env: Env, name: str, wait: bool, timeout: float | None, as_json: bool) -> None:
    """Move node NAME's processors to other nodes, then stop its workers.

    Replacement workers start on other nodes first; the old ones stop (finishing their
    calls) only once those serve, so no call fails. Without room elsewhere the old workers
    keep serving, and --wait says it waits for capacity. A processor pinned to NAME
    (--host) stops and waits until the node is uncordoned.
    """
    from .. import nodes

    _change(env, name, "drain", as_json and not wait)
    if not wait:
        return

    def progress(row, why: str) -> None:
        click.echo(f"node {name}: {row['state']}, still running {', '.join(row['processors']) or 'workers'}"
                   f" ({row['workers']} worker(s)): {why}", err=True)

    row = nodes.wait_drained(name, timeout, progress=progress)
    if as_json:
        render_one(row, as_json=True)
    else:
        click.echo(f"node {name}: {row['state']}", err=True)
