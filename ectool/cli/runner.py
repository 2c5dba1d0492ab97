"""One call from the command line (``ec run``, ``ec task run``): its arguments from words or
stdin, submit, wait, print the outcome. No click here: the fast path (:mod:`.fast`) and the
click commands (:mod:`.run_cmd`) share it."""

from __future__ import annotations

import sys

from ..arguments import parse_word, stdin_value
from ..errors import CallTimeout, TaskFailed
from .env import Env


def call_values(args: tuple[str, ...] | list[str], has_kwargs: bool) -> tuple[list, bool]:
    """The positional arguments for ``ec run``'s words, and whether stdin gave them: with no
    words and no ``-k`` (or with ``-``) stdin is the one argument."""
    stdin_used = tuple(args) == ("-",) or (not args and not has_kwargs)
    if stdin_used:
        return read_stdin(explicit=tuple(args) == ("-",)), True
    return [parse_word(a) for a in args], False


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
    from ..output import result_text, text_bytes

    text = result_text(value) + "\n"
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:  # a lone surrogate in the result (see text_bytes)
        sys.stdout.flush()
        sys.stdout.buffer.write(text_bytes(text))
        sys.stdout.buffer.flush()


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
            sys.stdout.write(cid + "\n")
            return
        try:
            outcome = client.wait([cid], timeout)[cid]
        except CallTimeout:
            raise CallTimeout(f"timed out; call {cid} is still queued or running (ec wait {cid})") from None
        except KeyboardInterrupt:  # the call is durable: it goes on without us
            sys.stderr.write(f"\nec: interrupted; call {cid} keeps running (ec wait {cid})\n")
            sys.exit(130)
        if stderr:
            show_log(cid)
        report(outcome, as_json, verbose)
    finally:
        client.close()
