"""The ``ec`` commands (name -> module and one-line help, imported only when invoked) and how
an expected error ends the process: one line on stderr and its exit code. Click-free, so
both the fast ``ec run`` path and the click group (:mod:`.group`) use it."""

from __future__ import annotations

import sys
from typing import NoReturn

from ..errors import EcError

#: command name -> ("module:attribute", one-line help), in the order --help shows them
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("ectool.cli.run_cmd:run", "Call a socket with arguments or stdin; print the result."),
    "map": ("ectool.cli.run_cmd:map_cmd", "Call a socket once per stdin line (ec run --lines)."),
    "attach": ("ectool.cli.stream_cmd:attach", "Print the rest of a named stream (ec map --name) after it died."),
    "replay": ("ectool.cli.replay_cmd:replay", "Run a recorded call or workflow again at the commit that ran it."),
    "task": ("ectool.cli.run_cmd:task", "The seed's spelling: ec task run --socket S --data D."),
    "flow": ("ectool.cli.flow_cmd:flow", "Group a shell's calls (pipes, tee branches) into one flow."),
    "result": ("ectool.cli.calls_cmd:result", "Print the result of a finished call."),
    "wait": ("ectool.cli.calls_cmd:wait", "Wait for calls to finish; print their results."),
    "logs": ("ectool.cli.calls_cmd:logs", "Print what a call (or each call of a workflow) printed remotely."),
    "cancel": ("ectool.cli.calls_cmd:cancel", "Cancel queued calls."),
    "add": ("ectool.cli.network_cmd:add", "Add a queue, processor, socket, plug, schedule, node, user, role."),
    "ls": ("ectool.cli.network_cmd:ls", "List objects or calls (ec ls call --id ID -g: call graph)."),
    "show": ("ectool.cli.network_cmd:show", "Show one object or call."),
    "update": ("ectool.cli.network_cmd:update", "Change fields of an object: ec update KIND NAME k=v."),
    "delete": ("ectool.cli.network_cmd:delete", "Delete an object (--cascade for dependents)."),
    "proc": ("ectool.cli.network_cmd:proc", "Start, stop, pause, resume or restart a processor."),
    "schedule": ("ectool.cli.schedule_cmd:schedule", "Pause, resume, list or show schedules (periodic calls)."),
    "trust": ("ectool.cli.network_cmd:trust", "Manage trusted git repository patterns."),
    "compose": ("ectool.cli.compose_cmd:compose", "Apply or export a declarative network (TOML)."),
    "agent": ("ectool.cli.agent_cmd:agent", "Run an agent (ec-agentd) or list agents."),
    "node": ("ectool.cli.node_cmd:node", "List hosts; cordon, uncordon or drain one."),
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



def fail_or_raise(exc: Exception) -> NoReturn:
    """:func:`fail` for an expected error (an :class:`EcError`, a closed pipe, a store
    error no command expected); anything else is a bug and goes on up as it was."""
    if isinstance(exc, (EcError, BrokenPipeError)):
        fail(exc)
    known = store_error(exc)
    if known is None:
        raise exc
    fail(known)


def fail(exc: EcError | BrokenPipeError) -> NoReturn:
    """End the process for an expected error: one line on stderr and its exit code. A
    reader that went away (``| head``) is not an error worth a word."""
    if isinstance(exc, BrokenPipeError):
        sys.stderr.close()
        sys.exit(0)
    sys.stderr.write(f"ec: {exc}\n")
    sys.stderr.flush()
    sys.exit(exc.exit_code)


def store_error(exc: BaseException) -> EcError | None:
    """A store error no command turned into an :class:`EcError` (peewee's, once it is
    imported), as one: a value the store refuses is a usage error (exit 2); an outage or a
    broken store (locked past the busy timeout, a lost connection, a file that is not a
    database) exit 3. A bad statement stays a traceback: that is a bug."""
    peewee = sys.modules.get("peewee")
    if peewee is None or not isinstance(exc, peewee.PeeweeException):
        return None
    if isinstance(exc, (peewee.ProgrammingError, peewee.ImproperlyConfigured)):
        return None  # a bug (a bad statement, a missing driver): its traceback is wanted
    from ..errors import Unreachable, UsageError

    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, (peewee.IntegrityError, peewee.DataError)):
        return UsageError(f"the store refused it: {text}")
    return Unreachable(f"store error: {text}")
