"""``ec flow begin|end|run|show``: group a shell's calls into one flow (one call graph)."""

from __future__ import annotations

import os
import subprocess
import sys

import click

from ..errors import UsageError
from .env import Env
from .group import pass_env
from .shell_cmd import SHELLS, login_shell

shell_option = click.option("--shell", "shell_name", type=click.Choice(SHELLS),
                            help="Syntax of the printed line (default: from $SHELL).")


@click.group()
def flow() -> None:
    """Group every `ec run` / `ec map` of a shell (pipes and tee branches) into one flow."""


@flow.command("begin")
@click.option("-l", "--label", help="A label for the flow's root in the call graph.")
@shell_option
@pass_env
def begin(env: Env, label, shell_name) -> None:
    """Start a flow; print the line that exports EC_FLOW (use with eval).

    \b
    Example:
      eval "$(ec flow begin)"
      echo "HI THERE!" | tee >(ec run S1) >(ec run S2) >/dev/null
      ec ls call --id "$EC_FLOW" -g
      eval "$(ec flow end)"
    """
    from .. import flows

    env.store()
    fid = flows.begin(label)
    if (shell_name or login_shell()) == "fish":
        click.echo(f"set -gx EC_FLOW {fid}")
    else:
        click.echo(f"export EC_FLOW={fid}")


@flow.command("end")
@click.option("--id", "flow_id", help="The flow to end (default: $EC_FLOW).")
@click.option("--failed", is_flag=True, help="Mark the flow failed instead of done.")
@shell_option
@pass_env
def end(env: Env, flow_id, failed, shell_name) -> None:
    """End the flow (its root call becomes done); print the line that unsets EC_FLOW."""
    from .. import flows

    env.store()
    fid = flow_id or flows.current()
    if not fid:
        raise UsageError("no flow: EC_FLOW is not set (and no --id)")
    flows.end(flows.check_id(fid), "failed" if failed else "done")
    click.echo("set -e EC_FLOW" if (shell_name or login_shell()) == "fish" else "unset EC_FLOW")


@flow.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-l", "--label", help="A label for the flow's root (default: the command).")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the flow id on stderr.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_env
def run(env: Env, label, quiet, command) -> None:
    """Run COMMAND with EC_FLOW set to a new flow; exit with its status.

    The flow ends done if COMMAND exits 0, failed otherwise.

    \b
    Example:
      ec flow run -- bash -c 'echo hi | ec run S1 | ec run S2'
    """
    from .. import flows

    env.store()
    fid = flows.begin(label or " ".join(command))
    if not quiet:
        click.echo(f"ec: flow {fid} (ec ls call --id {fid} -g)", err=True)
    try:
        rc = subprocess.call(list(command), env=dict(os.environ, EC_FLOW=fid))
    except OSError as exc:
        flows.end(fid, "failed", str(exc))
        raise UsageError(f"cannot run {command[0]!r}: {exc.strerror}", exit_code=127) from None
    except KeyboardInterrupt:
        rc = 130
    flows.end(fid, "done" if rc == 0 else "failed", None if rc == 0 else f"exit status {rc}")
    sys.exit(rc if rc >= 0 else 128 - rc)


@flow.command("show")
@click.option("--id", "flow_id", help="The flow to show (default: $EC_FLOW).")
@click.option("--json", "as_json", is_flag=True, help="The graph as nested JSON.")
@pass_env
def show(env: Env, flow_id, as_json) -> None:
    """Print the flow's call graph (same as ec ls call --id $EC_FLOW -g)."""
    from .. import flows
    from .calls_cmd import print_tree

    env.store()
    fid = flow_id or flows.current()
    if not fid:
        raise UsageError("no flow: EC_FLOW is not set (and no --id)")
    print_tree(flows.check_id(fid), as_json)
