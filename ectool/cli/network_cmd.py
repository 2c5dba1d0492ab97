"""``ec add / ls / show / update / delete / proc / trust``: building the network."""

from __future__ import annotations

import click

from .. import network
from ..errors import UsageError
from ..output import render, render_one
from . import complete
from .env import Env, changed  # changed: compose_cmd imports it from here too
from .group import pass_env
from .schedule_cmd import add_schedule, last_option

#: ec ls workers: a worker whose heartbeat is stale (or whose agent is lost) is shown lost
WORKER_COLUMNS = ["processor", "host", "pid", "cpu", "status", "commit", "heartbeat", "cpu_percent", "rss_mb"]
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")

COLUMNS = {
    "processor": ["name", "module", "gitrepo", "branch", "commit", "concurrency", "host",
                  "requested_status", "status", "status_reason", "sockets"],
    "socket": ["name", "processor", "task", "queue", "concurrency", "retries", "timeout"],
    "queue": ["name", "type", "queue_type", "durable", "max_length"],
    "plug": ["name", "source", "target", "argument", "fires_on"],
    "trust": ["pattern"],
}


@click.group()
def add() -> None:
    """Add queues, processors, sockets, plugs, nodes, users, roles and privileges
    (the seed's `pyfi add ...` spellings work)."""


@add.command("queue")
@click.option("-n", "--name", required=True, help="Queue name.")
@click.option("-t", "--type", "type_", default="direct", show_default=True,
              type=click.Choice(["direct", "topic", "fanout"]), help="Exchange type.")
@click.option("--kind", "queue_type", default=None, type=click.Choice(["quorum", "classic"]),
              help="RabbitMQ queue kind (default from config: quorum).")
@click.option("--max-length", type=int, help="Maximum queued calls (back-pressure).")
@json_option
@pass_env
def add_queue(env: Env, name, type_, queue_type, max_length, as_json) -> None:
    """Add a durable queue. Example: ec add queue -n pyfi.queue1 -t direct"""
    env.store()
    q = network.add_queue(name, type_, queue_type=queue_type or env.config.queue_type,
                          max_length=max_length)
    _done(q, as_json)


@add.command("processor", context_settings={"help_option_names": ["--help"]})
@click.option("-n", "--name", required=True, help="Processor name.")
@click.option("-g", "--gitrepo", required=True, help="Git repository URL (https, ssh, file://, path; #subdirectory=...).")
@click.option("-m", "--module", help="Python module holding the functions (not for --runtime exec).")
@click.option("-b", "--branch", help="Branch to deploy (default: the repository's default branch, its "
              "HEAD, as git clone follows).")
@click.option("--commit", help="Pin a commit instead of the branch head.")
@click.option("-c", "--concurrency", default=1, show_default=True, type=int, help="Worker processes (cores).")
@click.option("-h", "--host", help="Run only on this host.")
@click.option("--runtime", type=click.Choice(["python", "exec"]), default="python", show_default=True,
              help="python: sockets name functions of the module; exec: sockets name executable files "
              "in the repository, run once per call (stdin in, stdout out).")
@json_option
@pass_env
def add_processor(env: Env, name, gitrepo, module, branch, commit, concurrency, host, runtime, as_json) -> None:
    """Add a processor: a module (or, with --runtime exec, scripts) in a git repository
    that agents deploy.

    \b
    Examples:
      ec add processor -n proc1 -g https://github.com/radiantone/pyfi-processors -m pyfi.processors.sample
      ec add processor -n scripts -g file:///src/repo --runtime exec
      ec add socket -n wordcount -q q1 -pn scripts -t bin/wordcount.sh
    """
    env.store()
    if runtime == "python" and not module:
        raise UsageError("Missing option '-m' / '--module' (a python processor needs its module)")
    p = network.add_processor(name, gitrepo, module or "", branch=branch, commit=commit,
                              concurrency=concurrency, host=host, runtime=runtime)
    if not network.is_trusted(gitrepo):
        click.echo(f"ec: warning: {gitrepo} is not trusted yet; agents will not deploy it "
                   f"until you run: ec trust add '{gitrepo}'", err=True)
    changed(env)
    _done(p, as_json)


@add.command("socket")
@click.option("-n", "--name", required=True, help="Socket name.")
@click.option("-q", "--queue", required=True, help="Queue in front of the socket.", shell_complete=complete.queues)
@click.option("-pn", "--processor", "processor", required=True, help="Processor name.",
              shell_complete=complete.processors)
@click.option("-t", "--task", required=True, help="Function name in the processor's module.")
@click.option("-c", "--concurrency", default=1, show_default=True, type=int, help="Calls run at once (a worker process and core each).")
@click.option("--retries", default=0, show_default=True, type=int, help="Retries after an exception.")
@click.option("--timeout", type=float, help="Seconds a call may run before it fails.")
@click.option("--backoff", default=1.0, show_default=True, type=float, help="Base retry delay in seconds: retry n waits between half and all of backoff*2^(n-1), at most 300s.")
@json_option
@pass_env
def add_socket(env: Env, name, queue, processor, task, concurrency, retries, timeout, backoff, as_json) -> None:
    """Add a socket: one function of a processor behind a queue.

    \b
    Example:
      ec add socket -n pyfi.processors.sample.do_something -q pyfi.queue1 -pn proc1 -t do_something -c 5
    """
    env.store()
    s = network.add_socket(name, queue, processor, task, concurrency=concurrency,
                           retries=retries, timeout=timeout, backoff=backoff)
    changed(env)
    _done(s, as_json)


@add.command("plug")
@click.option("-n", "--name", required=True, help="Plug name.")
@click.option("-s", "--source", required=True, help="Socket whose outcomes flow out.")
@click.option("-t", "--target", required=True, help="Socket that receives them.")
@click.option("-a", "--arg", "--argument", "argument",
              help="Bind the value to this keyword argument of the target; the target fires once "
                   "all its bound arguments arrived in the same flow (fan-in).")
@click.option("--on", "on", default="result", show_default=True, type=click.Choice(["result", "error"]),
              help="Forward results, or errors ({error_type, error_message, call}).")
@json_option
@pass_env
def add_plug(env: Env, name, source, target, argument, on, as_json) -> None:
    """Add a plug: every outcome of SOURCE becomes a call of TARGET (its parent is the source
    call, so the call graph spans the flow). A plug that would close a cycle is refused.

    \b
    Example:
      ec add plug -n p1 --source pyfi.processors.sample.do_something --target pyfi.processors.sample.do_this
    """
    env.store()
    plug = network.add_plug(name, source, target, argument, on)
    changed(env)
    _done(plug, as_json)


add.add_command(add_schedule)


@add.command("node")
@click.option("-n", "--name", required=True, help="Host name.")
@click.option("--cpus", default=1, show_default=True, type=int)
@click.option("--memory", type=int, help="Memory in MiB.")
@json_option
@pass_env
def add_node(env: Env, name, cpus, memory, as_json) -> None:
    """Add a node (agents register their own node; this is for planning)."""
    env.store()
    _done(network.add_node(name, cpus, memory), as_json)


@add.command("user")
@click.option("-n", "--name", required=True)
@click.option("-r", "--role", "roles", multiple=True, help="Role to grant (repeatable).")
@json_option
@pass_env
def add_user(env: Env, name, roles, as_json) -> None:
    """Add a user, optionally with roles. On PostgreSQL the user is the database role of
    that name, and it gets the table rights its privileges imply (GRANT)."""
    env.store()
    user = network.add_user(name, list(roles))
    for note in getattr(user, "notes", ()):
        click.echo(f"ec: note: {note}", err=True)
    _done(user, as_json)


@add.command("role")
@click.option("-n", "--name", required=True)
@click.option("-p", "--privilege", "privileges", multiple=True, help="Privilege (repeatable), e.g. RUN_TASK.")
@json_option
@pass_env
def add_role(env: Env, name, privileges, as_json) -> None:
    """Add a role holding privileges."""
    env.store()
    _done(network.add_role(name, list(privileges)), as_json)


@add.command("privilege")
@click.option("-n", "--name", required=True)
@json_option
@pass_env
def add_privilege(env: Env, name, as_json) -> None:
    """Add a privilege (one of the names in `ec ls privileges --known`)."""
    env.store()
    _done(network.add_privilege(name), as_json)


def _done(obj, as_json: bool) -> None:
    row = network.to_row(obj)
    if as_json:
        render_one(row, as_json=True)
    else:
        what = obj.__class__.__name__.lower()
        click.echo(f"added {what} {row.get('name', row.get('pattern'))}", err=True)


@click.command("ls")
@click.argument("kind", shell_complete=complete.ls_kinds)
@click.option("--id", "call_id", help="With KIND=call: one call (and its tree with -g).")
@click.option("-g", "--graph", is_flag=True, help="With --id: print the call graph.")
@click.option("--status", help="Calls: only this status.")
@click.option("--socket", help="Calls: only this socket.", shell_complete=complete.sockets)
@click.option("--since", help="Calls: submitted within this long (30s, 10m, 2h, 1d).")
@click.option("--flow", "flow_id", help="Calls: only those of this flow (ec flow begin; $EC_FLOW).")
@click.option("--commit", help="Calls: only those run at a commit starting with this (provenance).")
@click.option("--schedule", "schedule_name", help="Calls: only those this schedule's ticks made, with their tick.",
              shell_complete=complete.schedules)
@click.option("--limit", default=100, show_default=True, type=int, help="Calls: at most this many, newest first.")
@click.option("--known", is_flag=True, help="Privileges: every privilege name the system knows.")
@json_option
@pass_env
def ls(env: Env, kind, call_id, graph, status, socket, since, flow_id, commit, schedule_name, limit, known,
       as_json) -> None:
    """List objects of KIND: processors, sockets, queues, plugs, schedules, workflows, nodes,
    workers, agents, users, roles, privileges, trust, calls, streams (ec map --name).

    `ec ls call --id ID -g` prints the call graph of ID's workflow.
    """
    env.store()
    k = kind.lower().rstrip("s") if kind.lower() not in ("trust",) else "trust"
    if k in ("schedule", "workflow") or (k == "call" and schedule_name):
        from . import schedule_cmd

        if k == "schedule":
            schedule_cmd.list_schedules(as_json)
        elif k == "workflow":
            schedule_cmd.list_workflows(as_json)
        else:
            schedule_cmd.list_calls(schedule_name, status, limit, as_json)
        return
    if k == "stream":
        from .. import named_streams

        render(named_streams.list_streams(), named_streams.COLUMNS, as_json=as_json)
        return
    if k == "call":
        from . import calls_cmd

        calls_cmd.list_calls(call_id, graph, status, socket, since, limit, as_json, flow=flow_id, commit=commit)
        return
    if k in ("worker", "agent", "node"):
        from .. import calls as calls_lib
        from .agent_cmd import AGENT_COLUMNS
        from .node_cmd import NODE_COLUMNS

        cols = {"worker": WORKER_COLUMNS, "agent": AGENT_COLUMNS, "node": NODE_COLUMNS}[k]
        render(calls_lib.list_runtime(k), cols, as_json=as_json)
        return
    if k == "privilege" and known:
        render([{"name": p} for p in network.PRIVILEGES], ["name"], as_json=as_json)
        return
    model = network.kind_model(kind)
    name = model.__name__.lower()
    rows = network.list_objects(kind)
    render(rows, COLUMNS.get(name) or (list(rows[0]) if rows else ["name"]), as_json=as_json)


@click.command()
@click.argument("kind", shell_complete=complete.object_kinds)
@click.argument("name", shell_complete=complete.object_names)
@last_option
@json_option
@pass_env
def show(env: Env, kind, name, last, as_json) -> None:
    """Show one object (or `ec show call ID`)."""
    env.store()
    if kind.lower().rstrip("s") == "call":
        from .. import calls as calls_lib

        render_one(calls_lib.call_row(calls_lib.get_call(name)), as_json=as_json)
        return
    if kind.lower().rstrip("s") == "schedule":
        from .schedule_cmd import show_schedule

        show_schedule(name, as_json, last)
        return
    if kind.lower().rstrip("s") == "workflow":
        from .. import workflow_defs

        render_one(workflow_defs.show(name), as_json=as_json)
        return
    if kind.lower().rstrip("s") == "stream":
        from .. import named_streams

        render_one(named_streams.show(name), as_json=as_json)
        return
    render_one(network.show(kind, name), as_json=as_json)


@click.command()
@click.argument("kind", shell_complete=complete.object_kinds)
@click.argument("name", shell_complete=complete.object_names)
@click.argument("changes", nargs=-1, required=True)
@json_option
@pass_env
def update(env: Env, kind, name, changes, as_json) -> None:
    """Change fields: ec update processor proc1 concurrency=4 branch=dev"""
    env.store()
    parsed = {}
    for item in changes:
        if "=" not in item:
            raise UsageError(f"expected FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        parsed[key.strip()] = value
    if kind.lower().rstrip("s") == "schedule":
        from .. import schedules

        row = schedules.update(name, parsed)
        if as_json:
            render_one(schedules.to_row(row), as_json=True)
        else:
            click.echo(f"updated schedule {name}", err=True)
        return
    obj = network.update(kind, name, parsed)
    changed(env)
    if as_json:
        render_one(network.to_row(obj), as_json=True)
    else:
        click.echo(f"updated {obj.__class__.__name__.lower()} {name}", err=True)


@click.command()
@click.argument("kind", shell_complete=complete.object_kinds)
@click.argument("name", shell_complete=complete.object_names)
@click.option("--cascade", is_flag=True, help="Also delete dependent sockets and plugs.")
@pass_env
def delete(env: Env, kind, name, cascade) -> None:
    """Delete an object. A processor or queue with sockets, or a socket with plugs, needs --cascade."""
    env.store()
    if kind.lower().rstrip("s") in ("schedule", "workflow", "stream"):
        from .. import named_streams, schedules, workflow_defs

        what = kind.lower().rstrip("s")
        {"schedule": schedules.delete, "workflow": workflow_defs.delete, "stream": named_streams.delete}[what](name)
        click.echo(f"deleted {what} {name}", err=True)
        return
    for gone in network.delete(kind, name, cascade=cascade):
        click.echo(f"deleted {gone}", err=True)
    changed(env)


@click.command()
@click.argument("action", type=click.Choice(["start", "stop", "pause", "resume", "restart"]))
@click.argument("name", shell_complete=complete.processors)
@json_option
@pass_env
def proc(env: Env, action, name, as_json) -> None:
    """Ask agents to start, stop, pause, resume or restart a processor."""
    env.store()
    p = network.request_status(name, action)
    changed(env)
    if as_json:
        render_one(network.to_row(p), as_json=True)
    else:
        click.echo(f"processor {name}: requested {p.requested_status}", err=True)


@click.group()
def trust() -> None:
    """Trusted git repositories: only matching processors are deployed."""


@trust.command("add")
@click.argument("pattern")
@pass_env
def trust_add(env: Env, pattern) -> None:
    """Trust repositories matching PATTERN, a shell glob such as https://github.com/me/*"""
    env.store()
    network.add_trust(pattern)
    changed(env)
    click.echo(f"trusted {pattern}", err=True)


@trust.command("ls")
@json_option
@pass_env
def trust_ls(env: Env, as_json) -> None:
    """List trusted patterns."""
    env.store()
    render(network.list_objects("trust"), ["pattern"], as_json=as_json)


@trust.command("rm")
@click.argument("pattern")
@pass_env
def trust_rm(env: Env, pattern) -> None:
    """Stop trusting PATTERN."""
    env.store()
    network.delete("trust", pattern)
    click.echo(f"untrusted {pattern}", err=True)
