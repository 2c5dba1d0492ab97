"""``ec broker setup|teardown``: the network's own RabbitMQ vhost and user."""

from __future__ import annotations

import click

from ..config import mask_url
from ..errors import UsageError
from .env import Env
from .group import pass_env

CTL_HELP = "The rabbitmqctl command to run, e.g. 'sudo rabbitmqctl'. [default: rabbitmqctl]"


@click.group()
def broker() -> None:
    """Set up or remove the RabbitMQ vhost and user named in the broker URL."""


def run_setup(env: Env, rabbitmqctl: str = "rabbitmqctl") -> None:
    """Set up the configured broker URL's vhost and user here, then connect with it."""
    from .. import broker_setup

    acct = broker_setup.account(env.config.broker, env.config.namespace)
    broker_setup.setup(acct, rabbitmqctl, report=lambda line: click.echo(line, err=True))
    broker_setup.check(acct)
    click.echo(f"ok: {mask_url(acct.url)}", err=True)


@broker.command("setup")
@click.option("--print", "print_", is_flag=True,
              help="Print the commands as a shell script (for a remote broker) instead of running them.")
@click.option("--rabbitmqctl", default="rabbitmqctl", show_default=False, metavar="CMD", help=CTL_HELP)
@pass_env
def setup(env: Env, print_: bool, rabbitmqctl: str) -> None:
    """Create the broker URL's vhost and user (with the URL's password) and grant it the
    network's queues and exchanges. Idempotent. Runs rabbitmqctl on this host, then
    connects with the URL; --print writes the steps for an operator instead."""
    from .. import broker_setup

    if print_:  # the script reads the password from the environment: the URL needs none
        acct = broker_setup.account(env.config.broker, env.config.namespace, password_needed=False)
        click.echo(broker_setup.script(acct, rabbitmqctl), nl=False)
        return
    run_setup(env, rabbitmqctl)


@broker.command("teardown")
@click.option("--yes", is_flag=True, help="Really delete the user, and the vhost with every queue in it.")
@click.option("--print", "print_", is_flag=True, help="Print the commands instead of running them.")
@click.option("--rabbitmqctl", default="rabbitmqctl", show_default=False, metavar="CMD", help=CTL_HELP)
@pass_env
def teardown(env: Env, yes: bool, print_: bool, rabbitmqctl: str) -> None:
    """Delete the broker URL's user and vhost (never the default vhost '/'). Needs --yes."""
    from .. import broker_setup

    acct = broker_setup.account(env.config.broker, env.config.namespace, password_needed=not print_)
    if print_:
        click.echo(broker_setup.script(acct, rabbitmqctl, teardown=True), nl=False)
        return
    if not yes:
        raise UsageError(f"refusing to delete the vhost and user of {mask_url(acct.url)} without --yes")
    broker_setup.teardown(acct, rabbitmqctl, report=lambda line: click.echo(line, err=True))
