"""``ec attach NAME``: finish a named stream (``ec map --name``) after its producer died."""

from __future__ import annotations

import json
import sys

import click

from ..errors import TaskFailed
from . import complete
from .env import Env
from .group import pass_env


@click.command()
@click.argument("name", shell_complete=complete.streams)
@click.option("--from-start", is_flag=True, help="Print every line's result again, from the first line.")
@click.option("--timeout", type=float, help="Give up after this many seconds without a result (exit 4).")
@click.option("-v", "--verbose", is_flag=True, help="Show the remote traceback of each failed call.")
@pass_env
def attach(env: Env, name, from_start, timeout, verbose) -> None:
    """Print the rest of stream NAME's results, in input order, from where its output stopped.

    NAME is a stream recorded by ec map --name NAME (or ec run --lines --name NAME) whose
    process died or was interrupted. Lines it read but had not sent are sent now; calls still
    running are waited for. When stdout is the file the stream wrote to (>> out), lines
    already in it are not written again. Input it never read is reported, not invented.
    Exit 0, or 1 if a call of the stream failed or its input was cut short (on stderr),
    2 for an unknown or finished stream, 4 on --timeout, 130 on ^C.

    \b
    Examples:
      seq 100000 | ec map --name big S > out    # the terminal dies...
      ec attach big >> out                       # out is as if it had not
      ec attach --from-start big | wc -l
    """
    from ..attach import attach as attach_lib
    from .map_cmd import line_result

    env.store()
    row_json = _options(name)

    def failed(seq: int, outcome) -> None:
        if verbose and outcome.traceback:
            sys.stderr.write(outcome.traceback)
        sys.stderr.write(f"ec: line {seq}: {outcome.error_line()}\n")

    try:
        stats = attach_lib(env.config, name, sys.stdout.buffer, lambda seq, o: line_result(o, seq, row_json),
                           from_start=from_start, timeout=timeout, on_failed=failed)
    except KeyboardInterrupt:
        sys.stderr.write(f"ec: interrupted; ec attach {name} goes on from here\n")
        sys.exit(130)
    for note in stats.notes or ():
        sys.stderr.write(f"ec: stream {name}: {note}\n")
    if stats.resent:
        sys.stderr.write(f"ec: stream {name}: sent {stats.resent} line(s) its producer had read but not durably sent\n")
    problems = []
    if stats.failed:
        problems.append(f"{stats.failed} of {stats.total} call(s) failed")
    if stats.unread_after is not None:
        problems.append(f"its input after line {stats.unread_after} was never read (the producer died first); "
                        "nothing ran for it")
    if problems:
        raise TaskFailed(f"stream {name}: " + "; ".join(problems))


def _options(name: str) -> bool:
    """Whether the stream writes JSON outcomes (ec map --json); False for an unknown one
    (attach then says it is unknown)."""
    from ..store import streams

    row = streams.get(name)
    if row is None:
        return False
    try:
        return bool(json.loads(row.options).get("json"))
    except (ValueError, AttributeError):
        return False
