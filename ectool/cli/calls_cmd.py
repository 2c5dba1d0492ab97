"""``ec result``, ``ec wait``, ``ec cancel``, ``ec dead`` and ``ec ls calls``."""

from __future__ import annotations

import sys

import click

from .. import calls
from ..errors import TaskFailed, UsageError
from ..output import render, render_one, use_color
from .env import Env
from .group import pass_env


@click.command()
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("-v", "--verbose", is_flag=True, help="Show the traceback of a failed call.")
@pass_env
def result(env: Env, call_id, as_json, verbose) -> None:
    """Print the result of CALL_ID (exit 4 if it has not finished, 1 if it failed)."""
    from ..errors import CallTimeout
    from ..outcome import Outcome
    from .runner import report

    env.store()
    row = calls.get_call(call_id)
    out = Outcome.from_row(row)
    if not out.final:
        raise CallTimeout(f"call {call_id} is {row.status}")
    report(out, as_json, verbose)


@click.command()
@click.argument("call_id")
@pass_env
def logs(env: Env, call_id) -> None:
    """Print what CALL_ID printed remotely (its stdout/stderr; a script's stderr).

    For a workflow or shell flow id, every member's log, each line prefixed by the
    member's socket name. Exit 2 for an unknown id."""
    env.store()
    found = calls.call_logs(call_id)
    for row, text in found:
        if row.id == call_id:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        else:
            for line in text.splitlines():
                sys.stdout.write(f"{row.socket}: {line}\n")


@click.command()
@click.argument("call_ids", nargs=-1, required=True)
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 4).")
@click.option("--json", "as_json", is_flag=True)
@pass_env
def wait(env: Env, call_ids, timeout, as_json) -> None:
    """Wait for CALL_IDS to finish and print their results in order (exit 1 if any failed)."""
    from .runner import report

    env.store()
    if call_ids == ("-",):
        call_ids = tuple(w for w in sys.stdin.read().split() if w)
    done = calls.wait_stored(list(call_ids), timeout)
    failed = 0
    for cid in call_ids:
        try:
            report(done[cid], as_json)
        except TaskFailed as exc:
            failed += 1
            click.echo(f"ec: {exc}", err=True)
    if failed:
        raise TaskFailed(f"{failed} of {len(call_ids)} call(s) did not succeed")


@click.command()
@click.argument("call_ids", nargs=-1, required=True)
@pass_env
def cancel(env: Env, call_ids) -> None:
    """Cancel calls that have not started (a running call is not interrupted)."""
    env.store()
    refused = [cid for cid in call_ids if not calls.cancel(cid)]
    for cid in refused:
        click.echo(f"ec: call {cid} is already running or finished", err=True)
    if refused:
        raise UsageError(f"{len(refused)} call(s) not cancelled")


@click.command()
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_env
def dead(env: Env, limit, as_json) -> None:
    """List dead-lettered messages with their reasons (oldest first)."""
    from ..messages import peek_id

    rows = [{"call": peek_id(d.body), "queue": d.queue, "reason": d.reason,
             "body": d.body[:200].decode("utf-8", "replace")} for d in env.transport.dead_letters(limit)]
    render(rows, ["call", "queue", "reason", "body"], as_json=as_json)


def list_calls(call_id, graph, status, socket, since, limit, as_json, flow=None, commit=None) -> None:
    """Body of ``ec ls calls`` / ``ec ls call --id ID [-g]``."""
    if call_id and graph:
        print_tree(call_id, as_json)
        return
    rows = [calls.call_row(r) for r in calls.list_calls(status=status, socket=socket, since=since, flow=flow,
                                                        commit=commit, limit=limit, ids=[call_id] if call_id else None)]
    if call_id and not rows:
        calls.get_call(call_id)
    if call_id and rows and not as_json:
        render_one(rows[0])
        return
    cols = ["id", "socket", "status", "attempts", "submitted", "finished", "error_type"]
    render(rows, cols + (["commit"] if commit else []), as_json=as_json)


def _label(row) -> str:
    took = ""
    if row.started and row.finished:
        took = f" {(row.finished - row.started).total_seconds() * 1000:.0f}ms"
    return f"{row.socket} [{row.status}{took}] {row.id}"


def print_tree(call_id: str, as_json: bool) -> None:
    root, children = calls.call_tree(call_id)
    if as_json:
        def node(r):
            return {**calls.call_row(r), "children": [node(c) for c in children.get(r.id, [])]}

        from ..output import dumps

        sys.stdout.write(dumps(node(root)) + "\n")
        return
    if use_color():
        from rich.console import Console
        from rich.tree import Tree

        def add(tree, r):
            for c in children.get(r.id, []):
                add(tree.add(_label(c)), c)

        t = Tree(_label(root))
        add(t, root)
        Console().print(t)
        return

    def walk(r, depth):
        sys.stdout.write("    " * depth + _label(r) + "\n")
        for c in children.get(r.id, []):
            walk(c, depth + 1)

    walk(root, 0)
