"""``ec-agentd`` (also ``ec agent run``): the agent daemon's command line."""

from __future__ import annotations

import click

from ectool.errors import EcError

agent_options = [
    click.option("--name", help="Agent name (default: the host name); run several per host with different names."),
    click.option("--node", envvar="EC_NODE",
                 help="Node name to register as (default: the host name). [env: EC_NODE]"),
    click.option("--cpus", type=int, help="Cores granted to this agent (default: all allowed cores)."),
    click.option("--interval", default=2.0, show_default=True, type=float,
                 help="Seconds between heartbeats and periodic reconciles."),
    click.option("--grace", default=30.0, show_default=True, type=float,
                 help="Seconds workers get to finish in-flight calls when stopped."),
]


def with_agent_options(fn):
    for opt in reversed(agent_options):
        fn = opt(fn)
    return fn


def run_agent(db: str | None, broker: str | None, name, node, cpus, interval, grace) -> None:
    from ectool.config import load

    from .agent import AgentDaemon

    if cpus is not None and cpus < 1:
        raise click.BadParameter("must be >= 1", param_hint="--cpus")
    AgentDaemon(load(db=db, broker=broker), name, cpus, interval, grace, node=node).run()


@click.command(context_settings={"max_content_width": 100})
@click.option("--db", help="Store URL. [env: EC_DB]")
@click.option("--broker", help="Broker URL. [env: EC_BROKER]")
@with_agent_options
def cli(db, broker, name, node, cpus, interval, grace) -> None:
    """Run the ElasticCode agent in the foreground: deploy processors placed on this host
    from git into virtualenvs and run one worker per granted core. SIGTERM drains
    workers and exits; SIGHUP reloads the configuration. See ec-agentd(8)."""
    run_agent(db, broker, name, node, cpus, interval, grace)


def main() -> None:
    from ectool import pika_lean

    pika_lean.lean = True  # this process only uses pika's BlockingConnection
    try:
        cli.main(prog_name="ec-agentd")
    except EcError as exc:
        click.echo(f"ec-agentd: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
