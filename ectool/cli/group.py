"""The ``ec`` click group: subcommands imported only when invoked, expected errors as one
line, and the :class:`~ectool.cli.env.Env` every subcommand is passed."""

from __future__ import annotations

import importlib

import click

from .. import __version__
from .commands import COMMANDS, fail_or_raise
from .env import Env

pass_env = click.make_pass_decorator(Env)


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked, and which turns expected
    errors (:class:`EcError`, and store errors no command expected) into one line on
    stderr and their exit code."""

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except Exception as exc:
            fail_or_raise(exc)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"max_content_width": 100})
@click.option("--db", "db_url", envvar=None, help="Store URL (sqlite:///... or postgresql://...). [env: EC_DB]")
@click.option("--broker", "broker_url", help="Broker URL (sqlite:///... or amqp://...). [env: EC_BROKER]")
@click.version_option(__version__, prog_name="ec")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, broker_url: str | None) -> None:
    """ElasticCode: durable, distributed function calls from your shell.

    Build a network of queues, processors (Python modules in git repositories) and sockets
    (functions behind durable queues); agents run workers; anyone calls sockets with
    `ec run`. Exit status: 0 ok, 1 task failed, 2 usage, 3 store/broker unreachable,
    4 timed out, 5 permission denied, 130 interrupted. See ec(1).
    """
    ctx.obj = Env(db=db_url, broker=broker_url)
