"""``ec replay ID``: run a recorded call or workflow again, at its commit (:mod:`ectool.replay`)."""

from __future__ import annotations

import sys

import click

from ..errors import CallTimeout, TaskFailed
from .env import Env
from .group import pass_env


@click.command()
@click.argument("call_id")
@click.option("--at", "at", metavar="COMMIT", help="Run at this commit of the processor instead.")
@click.option("--current", is_flag=True, help="Run at whatever the processor is deployed at now (no pin).")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the replay and print its result (exit 1 if it failed).")
@click.option("--diff", is_flag=True, help="Wait, print the original's and the replay's results side by side; "
              "exit 1 when they differ.")
@click.option("--timeout", type=float, help="With --wait/--diff: give up after this many seconds (exit 4).")
@click.option("--json", "as_json", is_flag=True)
@click.option("-v", "--verbose", is_flag=True, help="With --wait: the remote traceback of a failed replay.")
@pass_env
def replay(env: Env, call_id, at, current, wait_, diff, timeout, as_json, verbose) -> None:
    """Submit call (or workflow) CALL_ID again with the same socket and arguments, linked to
    it (replay_of), to run at the commit the original ran at (ec show call ID: commit).

    A worker whose processor is at another commit deploys the pinned one on demand (a
    worktree and virtualenv per processor+commit, EC_REPLAY_KEEP of them kept per
    repository on each host). A workflow is replayed whole, each step at its own commit.
    Without --wait the new id is printed. Exit 0; 1 if the replay failed (--wait) or its
    result differs (--diff); 2 for an unknown call or a commit the repository no longer
    has; 4 on --timeout.

    \b
    Examples:
      ec replay 3f2a... --diff          # does today's run match the recorded one?
      ec replay 3f2a... --current --wait
      ec ls calls --json --commit 1a2b3c
    """
    from .. import replay as lib
    from ..calls import Client, get_call
    from .runner import report

    env.store()
    client = Client(env.config, single_connection=True)
    try:
        waiting = wait_ or diff
        done = lib.replay(client, call_id, at=at, current=current, reply=waiting)
        head = {"id": done.id, "replay_of": done.of, "pin": done.pin, "workflow": done.workflow}
        if not waiting:
            _print(head if as_json else None, done.id)
            return
        try:
            outcome = client.wait([done.id], timeout)[done.id]
        except CallTimeout:
            raise CallTimeout(f"timed out; replay {done.id} is still queued or running (ec wait {done.id})") from None
        if not diff:
            report(outcome, as_json, verbose)
            return
        same, lines, body = lib.compare(get_call(done.of), get_call(done.id))
        if as_json:
            _print(head | body, "")
        else:
            sys.stdout.write("\n".join(lines) + "\n")
        if not same:
            raise TaskFailed(f"the replay's outcome differs from call {done.of}'s")
    finally:
        client.close()


def _print(row: dict | None, text: str) -> None:
    if row is None:
        sys.stdout.write(text + "\n")
        return
    from ..output import dumps

    sys.stdout.write(dumps(row) + "\n")
