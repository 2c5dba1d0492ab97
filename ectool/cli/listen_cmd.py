"""``ec listen``: the event stream as JSON lines."""

from __future__ import annotations

import os
import signal
import sys

import click

from ..errors import NotFound
from ..output import dumps
from .env import Env
from .group import pass_env


def matcher(name: str):
    """A filter for events about socket ``name``, or about processor ``name`` and its sockets."""
    from ..store.models import Processor, Socket

    sock = Socket.get_or_none(Socket.name == name)
    if sock is not None:
        return lambda e: e.get("socket") == name
    proc = Processor.get_or_none(Processor.name == name)
    if proc is None:
        raise NotFound(f"no socket or processor named {name!r}")
    sockets = {s.name for s in proc.sockets}
    return lambda e: e.get("processor") == name or e.get("socket") in sockets


def _stop(*_: object) -> None:
    raise KeyboardInterrupt


@click.command()
@click.argument("name", required=False)
@click.option("--events", "kinds", metavar="KINDS",
              help="Comma-separated kinds or patterns: call.done, call.*, worker (= worker.*). Default: all.")
@click.option("--count", type=int, help="Exit after this many events.")
@click.option("--timeout", type=float, help="Exit after this many seconds.")
@pass_env
def listen(env: Env, name, kinds, count, timeout) -> None:
    """Stream events (about socket or processor NAME) as JSON lines, one per event, until
    interrupted; call.done events carry short results. Fit for `| jq`."""
    from ..events import Subscription

    match = None
    if name:
        env.store()
        match = matcher(name)
    sub = Subscription(env.config, kinds.split(",") if kinds else None, match)
    signal.signal(signal.SIGTERM, _stop)
    click.echo(f"ec: listening for events ({kinds or 'all'}); Ctrl-C stops", err=True)
    seen = 0
    problem = None
    try:
        from time import monotonic

        deadline = None if timeout is None else monotonic() + timeout
        while count is None or seen < count:
            left = None if deadline is None else deadline - monotonic()
            if left is not None and left <= 0:
                break
            event = sub.get(timeout=1.0 if left is None else min(left, 1.0))
            if sub.problem != problem:
                problem = sub.problem
                click.echo(f"ec: event stream lost ({problem}); reconnecting" if problem
                           else "ec: event stream back (events in between are missed)", err=True)
            if event is None:
                continue
            sys.stdout.write(dumps(event) + "\n")
            sys.stdout.flush()
            seen += 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # the reader went away (| head): stop quietly; point stdout at /dev/null so the
        # interpreter's final flush does not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        sub.close()
