"""The ``ec`` command: a thin layer over the ``ectool`` library.

Subcommands load lazily so that ``ec --help`` and ``ec run`` import only what they use.
Expected failures (:class:`~ectool.errors.EcError`) print one line and exit with their code.
"""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import EcError

#: command name -> ("module:attribute", one-line help), in the order --help shows them
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("ectool.cli.run_cmd:run", "Call a socket with arguments or stdin; print the result."),
    "map": ("ectool.cli.run_cmd:map_cmd", "Call a socket once per stdin line (ec run --lines)."),
    "task": ("ectool.cli.run_cmd:task", "The seed's spelling: ec task run --socket S --data D."),
    "flow": ("ectool.cli.flow_cmd:flow", "Group a shell's calls (pipes, tee branches) into one flow."),
    "result": ("ectool.cli.calls_cmd:result", "Print the result of a finished call."),
    "wait": ("ectool.cli.calls_cmd:wait", "Wait for calls to finish; print their results."),
    "logs": ("ectool.cli.calls_cmd:logs", "Print what a call (or each call of a workflow) printed remotely."),
    "cancel": ("ectool.cli.calls_cmd:cancel", "Cancel queued calls."),
    "add": ("ectool.cli.network_cmd:add", "Add a queue, processor, socket, plug, node, user, role."),
    "ls": ("ectool.cli.network_cmd:ls", "List objects or calls (ec ls call --id ID -g: call graph)."),
    "show": ("ectool.cli.network_cmd:show", "Show one object or call."),
    "update": ("ectool.cli.network_cmd:update", "Change fields of an object: ec update KIND NAME k=v."),
    "delete": ("ectool.cli.network_cmd:delete", "Delete an object (--cascade for dependents)."),
    "proc": ("ectool.cli.network_cmd:proc", "Start, stop, pause, resume or restart a processor."),
    "trust": ("ectool.cli.network_cmd:trust", "Manage trusted git repository patterns."),
    "compose": ("ectool.cli.compose_cmd:compose", "Apply or export a declarative network (TOML)."),
    "agent": ("ectool.cli.agent_cmd:agent", "Run an agent (ec-agentd) or list agents."),
    "worker": ("ectool.cli.worker_cmd:worker", "Run worker processes for a processor's sockets."),
    "dead": ("ectool.cli.calls_cmd:dead", "List dead-lettered calls and their reasons."),
    "stats": ("ectool.cli.stats_cmd:stats", "Per-socket rates, latencies, failures, depth (from the store)."),
    "listen": ("ectool.cli.listen_cmd:listen", "Stream events (calls, workers, agents) as JSON lines."),
    "top": ("ectool.cli.top_cmd:top", "A refreshing view of the busiest sockets and workers."),
    "dash": ("ectool.cli.dash_cmd:dash", "The live dashboard (Textual): processors, queues, calls."),
    "shell": ("ectool.cli.shell_cmd:shell", "Print socket functions or completion scripts for your shell."),
    "demo": ("ectool.cli.demo_cmd:demo", "Build the sample network, run calls, show results."),
    "config": ("ectool.cli.config_cmd:config", "Show or create the configuration file."),
    "db": ("ectool.cli.db_cmd:db", "Create, upgrade or drop the store schema."),
    "broker": ("ectool.cli.broker_cmd:broker", "Set up the network's own RabbitMQ vhost and user."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked, and which turns expected
    errors (:class:`EcError`) into one line on stderr and their exit code."""

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except EcError as exc:
            click.echo(f"ec: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # the reader went away (| head): not an error worth a traceback
            sys.stderr.close()
            sys.exit(0)

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
    4 timed out, 5 permission denied. See ec(1).
    """
    from .env import Env

    ctx.obj = Env(db=db_url, broker=broker_url)


def main(argv: list[str] | None = None) -> None:
    """Entry point for the ``ec`` console script."""
    from .. import pika_lean

    pika_lean.lean = True  # this process only uses pika's BlockingConnection
    try:
        cli.main(args=argv, prog_name="ec")
    finally:
        # The process ends here. Leave what it built (modules, the store's and the broker's
        # objects) out of the interpreter's last garbage collections: on a small machine
        # they walked it for ~40-80 ms of every `ec run`. atexit handlers, stdio flushing
        # and objects made from now on are unaffected.
        import gc

        gc.freeze()
