"""``ec run``, ``ec map`` and the seed's ``ec task run``."""

from __future__ import annotations

import sys

import click

from ..errors import CallTimeout, TaskFailed, UsageError
from . import complete
from .args import parse_data, parse_kwargs, parse_word, stdin_value
from .env import Env, pass_env
from .map_cmd import with_map_options


def read_stdin(explicit: bool) -> list:
    """Stdin as the call's one argument; no argument for empty stdin or an interactive tty
    (unless ``-`` asked for it explicitly)."""
    if sys.stdin is None or (sys.stdin.isatty() and not explicit):
        return []
    raw = sys.stdin.buffer.read()
    return [stdin_value(raw)] if raw or explicit else []


def write_result(value) -> None:
    """stdout carries results only: text as text, bytes raw, anything else as JSON."""
    if isinstance(value, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
        return
    from ..output import result_text

    sys.stdout.write(result_text(value) + "\n")


def report(outcome, as_json: bool, verbose: bool = False) -> None:
    """Print an outcome; raise TaskFailed (exit 1) if the call did not succeed."""
    if as_json:
        from ..output import dumps

        sys.stdout.write(dumps({"id": outcome.id, "status": outcome.status, "result": outcome.result
                                if not isinstance(outcome.result, bytes) else outcome.result_json,
                                "error_type": outcome.error_type, "error_message": outcome.error_message,
                                "attempts": outcome.attempts}) + "\n")
    elif outcome.ok:
        write_result(outcome.result)
    if not outcome.ok:
        if verbose and outcome.traceback:
            sys.stderr.write(outcome.traceback)
        raise TaskFailed(outcome.error_line())


def show_log(call_id: str) -> None:
    """``--stderr``: write what the call printed remotely to our stderr."""
    from ..calls import call_log

    text = call_log(call_id)
    if text:
        sys.stdout.flush()
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()


def run_one(env: Env, socket: str, args: list, kwargs: dict, no_wait: bool, timeout: float | None,
            as_json: bool, verbose: bool, stdin_used: bool = False, stderr: bool = False) -> None:
    from .. import flows
    from ..calls import Client

    client = Client(env.config, single_connection=True)  # one broker connection for the whole process
    try:
        flow, parent, root = flows.lineage(stdin_used)
        cid = client.submit(socket, [(args, kwargs)], reply=not no_wait, parent=parent, root=root, flow=flow)[0]
        if flow:
            flows.record_output(flow, cid)  # the next `ec` in the pipe takes this call as parent
        if no_wait:
            click.echo(cid)
            return
        try:
            outcome = client.wait([cid], timeout)[cid]
        except CallTimeout:
            raise CallTimeout(f"timed out; call {cid} is still queued or running (ec wait {cid})") from None
        if stderr:
            show_log(cid)
        report(outcome, as_json, verbose)
    finally:
        client.close()


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
def run(env: Env, socket, args, kwargs, lines, jobs, unordered, halt, joblog, resume, resume_failed,
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
                  stderr=show_stderr)
        return
    if any(x is not None and x is not False for x in (jobs, joblog)) or unordered or resume or resume_failed \
            or halt != "never":
        raise UsageError("-j, --unordered, --halt, --joblog and --resume go with --lines (or ec map)")
    stdin_used = args == ("-",) or (not args and not kwargs)
    if stdin_used:
        values = read_stdin(explicit=args == ("-",))
    elif not args:
        values = []
    else:
        values = [parse_word(a) for a in args]
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
def map_cmd(env: Env, socket, jobs, unordered, halt, joblog, resume, resume_failed, timeout, as_json,
            verbose, show_stderr) -> None:
    """Call SOCKET once per stdin line; write the results in input order as they are ready.

    Each line (without its newline; bytes if not UTF-8) is one string argument. At most
    -j lines are between read and written: reading stdin pauses while the window is full.
    Exit 1 if any call failed (the count is on stderr). See ec-run(1).

    \b
    Examples:
      seq 5 | ec map pyfi.processors.sample.do_this
      ec map -j 32 --halt now,fail=1 --joblog jobs.log S < urls.txt
      ec map --joblog jobs.log --resume S < urls.txt   # skip lines already done
    """
    from .map_cmd import run_lines

    run_lines(env, socket, jobs=jobs, timeout=timeout, as_json=as_json, unordered=unordered, halt=halt,
              joblog=joblog, resume=resume, resume_failed=resume_failed, verbose=verbose, stderr=show_stderr)


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
    if data is None:
        args, kwargs = read_stdin(explicit=False), {}
    else:
        args, kwargs = parse_data(data)
    run_one(env, socket, args, kwargs, no_wait, timeout, as_json, verbose, stdin_used=data is None)
