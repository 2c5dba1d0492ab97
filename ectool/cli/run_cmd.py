"""``ec run``, ``ec map`` and the seed's ``ec task run``."""

from __future__ import annotations

from typing import Any

import click

from ..arguments import parse_data, parse_kwargs
from ..errors import UsageError
from . import complete
from .env import Env
from .group import pass_env
from .map_cmd import with_map_options
from .runner import call_values, read_stdin, run_one

common = [
    click.option("--no-wait", is_flag=True, help="Print the call id and exit once the call is durable."),
    click.option("--timeout", type=float, help="Give up waiting after this many seconds (exit 4)."),
    click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON."),
    click.option("-v", "--verbose", is_flag=True, help="Show the remote traceback of a failed call."),
]


def with_common(fn):
    for opt in reversed(common):
        fn = opt(fn)
    return fn


@click.command()
@click.argument("socket", shell_complete=complete.sockets)
@click.argument("args", nargs=-1)
@click.option("-k", "--kwarg", "kwargs", multiple=True, help="Keyword argument NAME=VALUE (repeatable).")
@click.option("--lines", is_flag=True, help="One call per stdin line (as a string); results in input order (see ec map).")
@with_map_options
@with_common
@click.option("--stderr", "show_stderr", is_flag=True,
              help="Write what the call printed remotely (its log, see ec logs) to stderr when it finishes.")
@pass_env
def run(env: Env, socket, args, kwargs, lines, jobs, unordered, halt, joblog, resume, resume_failed, stream_name,
        no_wait, timeout, as_json, verbose, show_stderr) -> None:
    """Call SOCKET and print its result.

    ARGS are parsed as JSON when they parse (3, [1,2], {"a":1}) and passed as strings
    otherwise; with no ARGS or -k (or with `-`) stdin is the one argument (bytes if not
    UTF-8; none if stdin is empty or a terminal). Put `--` before arguments that start
    with a dash: ec run S -- -5.

    \b
    Examples:
      echo "HI THERE!" | ec run pyfi.processors.sample.do_something
      ec run add_two 3 10
      ec run --no-wait slow 5     # prints the call id; later: ec wait ID
    """
    if lines:
        from .map_cmd import run_lines

        if args or kwargs or no_wait:
            raise UsageError("--lines takes its arguments from stdin: no ARGS, -k or --no-wait")
        run_lines(env, socket, jobs=jobs, timeout=timeout, as_json=as_json, unordered=unordered, halt=halt,
                  joblog=joblog, resume=resume, resume_failed=resume_failed, verbose=verbose,
                  stderr=show_stderr, name=stream_name)
        return
    if any(x is not None and x is not False for x in (jobs, joblog, stream_name)) or unordered or resume \
            or resume_failed or halt != "never":
        raise UsageError("-j, --unordered, --halt, --joblog, --resume and --name go with --lines (or ec map)")
    values, stdin_used = call_values(args, bool(kwargs))
    run_one(env, socket, values, parse_kwargs(kwargs), no_wait, timeout, as_json, verbose, stdin_used,
            show_stderr)


@click.command("map")
@click.argument("socket", shell_complete=complete.sockets)
@with_map_options
@click.option("--timeout", type=float, help="Give up after this many seconds without a result (exit 4).")
@click.option("--json", "as_json", is_flag=True, help="One JSON outcome per input line (failures too).")
@click.option("-v", "--verbose", is_flag=True, help="Show the remote traceback of each failed call.")
@click.option("--stderr", "show_stderr", is_flag=True,
              help="Write what each call printed remotely (its log) to stderr as its result is written.")
@pass_env
def map_cmd(env: Env, socket, jobs, unordered, halt, joblog, resume, resume_failed, stream_name, timeout,
            as_json, verbose, show_stderr) -> None:
    """Call SOCKET once per stdin line; write the results in input order as they are ready.

    Each line (without its newline; bytes if not UTF-8) is one string argument. At most
    -j lines are between read and written: reading stdin pauses while the window is full.
    Exit 1 if any call failed (the count is on stderr). See ec-run(1).

    \b
    Examples:
      seq 5 | ec map pyfi.processors.sample.do_this
      ec map -j 32 --halt now,fail=1 --joblog jobs.log S < urls.txt
      ec map --joblog jobs.log --resume S < urls.txt   # skip lines already done
      seq 100000 | ec map --name big S > out   # if it dies: ec attach big >> out
    """
    from .map_cmd import run_lines

    run_lines(env, socket, jobs=jobs, timeout=timeout, as_json=as_json, unordered=unordered, halt=halt,
              joblog=joblog, resume=resume, resume_failed=resume_failed, verbose=verbose, stderr=show_stderr,
              name=stream_name)


@click.group()
def task() -> None:
    """The seed's spellings (ec task run --socket S --data D)."""


@task.command("run")
@click.option("-s", "--socket", required=True, help="Socket to call.", shell_complete=complete.sockets)
@click.option("-d", "--data", help="Arguments: a JSON or Python literal (never evaluated); a list is "
              "positional arguments, a dict keyword arguments, anything else one argument. "
              "Default: stdin as one argument.")
@with_common
@pass_env
def task_run(env: Env, socket, data, no_wait, timeout, as_json, verbose) -> None:
    """Run a task: ec task run --socket pyfi.processors.sample.do_something --data "['some data']" """
    kwargs: dict[str, Any]
    if data is None:
        args, kwargs = read_stdin(explicit=False), {}
    else:
        args, kwargs = parse_data(data)
    run_one(env, socket, args, kwargs, no_wait, timeout, as_json, verbose, stdin_used=data is None)
