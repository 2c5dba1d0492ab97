"""``ec map`` / ``ec run --lines``: options, output and exit status over :mod:`ectool.mapper`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from ..errors import TaskFailed, UsageError
from .env import Env

map_options = [
    click.option("-j", "--jobs", type=int, help="Lines read but not yet written at most (default: twice "
                 "the socket's concurrency times its live workers, at least 256). Reading pauses when full."),
    click.option("--unordered", is_flag=True, help="Write each result as soon as it arrives, not in input order."),
    click.option("--halt", "halt", default="never", show_default=True, metavar="WHEN,WHAT=N",
                 help="Stop early, like GNU parallel: now,fail=1 (cancel the rest), soon,fail=N "
                 "(finish what is in flight), never."),
    click.option("--joblog", type=click.Path(dir_okay=False), help="Write GNU parallel's joblog (one "
                 "line per finished call) to this file."),
    click.option("--resume", is_flag=True, help="With --joblog: skip lines the joblog already records."),
    click.option("--resume-failed", is_flag=True, help="With --joblog: skip lines the joblog records as "
                 "succeeded (run failed ones again)."),
    click.option("--name", "stream_name", metavar="NAME", help="Record the stream under NAME (its input, "
                 "call ids and output position): if this process dies, ec attach NAME prints the rest."),
]


def with_map_options(fn):
    for opt in reversed(map_options):
        fn = opt(fn)
    return fn


def line_result(outcome, seq: int, as_json: bool) -> bytes:
    """What ``ec map`` writes for one line: the result and a newline (a bytes result raw,
    then a newline), nothing for a failed call; or one JSON object with ``--json``."""
    from ..output import dumps, result_text, text_bytes

    if as_json:
        result = outcome.result if not isinstance(outcome.result, bytes) else outcome.result_json
        return (dumps({"line": seq, "id": outcome.id, "status": outcome.status, "result": result,
                       "error_type": outcome.error_type, "error_message": outcome.error_message,
                       "attempts": outcome.attempts}) + "\n").encode()
    if not outcome.ok:
        return b""
    if isinstance(outcome.result, bytes):
        return outcome.result + b"\n"
    return text_bytes(result_text(outcome.result) + "\n")


class ProgressLine:
    """A rich progress line on stderr, only when stderr is a terminal and NO_COLOR is unset."""

    def __init__(self) -> None:
        self.progress = None
        if sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task("starting")
            self.progress.start()
        self.last = 0.0

    def __call__(self, stats) -> None:
        now = time.monotonic()
        if self.progress is None or now - self.last < 0.1:
            return
        self.last = now
        rate = (stats.succeeded + stats.failed) / max(now - stats.started, 1e-6)
        self.progress.update(self.task, description=f"ec map: {stats.sent} sent, {stats.in_flight} in flight, "
                             f"{stats.succeeded} done, {stats.failed} failed, {rate:,.0f}/s")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def open_joblog(path: str | None, resume: bool, resume_failed: bool):
    """(joblog file, lines to skip). Resuming appends; otherwise the joblog starts afresh."""
    from ..streaming import JOBLOG_HEADER, parse_joblog

    if (resume or resume_failed) and not path:
        raise UsageError("--resume and --resume-failed need --joblog FILE")
    if not path:
        return None, None
    skip = None
    p = Path(path)
    if (resume or resume_failed) and p.exists():
        with p.open(encoding="utf-8", errors="replace") as fh:
            skip = parse_joblog(fh, failed_too=not resume_failed)
        fh = p.open("a", encoding="utf-8", errors="backslashreplace")
        if p.stat().st_size == 0:
            fh.write(JOBLOG_HEADER)
        return fh, skip
    fh = p.open("w", encoding="utf-8", errors="backslashreplace")
    fh.write(JOBLOG_HEADER)
    fh.flush()
    return fh, None


def named_stream(name: str, socket: str, as_json: bool, source):
    """(the stream's journal, the input read ahead and stored through it)."""
    import json

    from ..journal import Journal, ReadAhead

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    journal = Journal.start(name, socket, json.dumps({"json": as_json}), fd)
    return journal, ReadAhead(source, journal)


def run_lines(env: Env, socket: str, *, jobs: int | None, timeout: float | None, as_json: bool,
              unordered: bool = False, halt: str = "never", joblog: str | None = None,
              resume: bool = False, resume_failed: bool = False, verbose: bool = False,
              stderr: bool = False, name: str | None = None) -> None:
    """Body of ``ec map``: stream stdin through SOCKET; exit 1 (count on stderr) if any failed.
    With ``name`` the stream is recorded (:mod:`ectool.journal`) for ``ec attach``."""
    from .. import flows
    from ..calls import Client
    from ..mapper import ClientBackend, Mapper, live_capacity
    from ..streaming import default_window, parse_halt

    policy = parse_halt(halt)
    if jobs is not None and jobs < 1:
        raise UsageError("-j/--jobs must be at least 1")
    if name is not None and (unordered or resume or resume_failed):
        raise UsageError("--name records an ordered stream: not with --unordered, --resume or --resume-failed")
    log, skip = open_joblog(joblog, resume, resume_failed)
    client = Client(env.config)
    progress = journal = None
    out = sys.stdout.buffer
    source = sys.stdin.buffer if sys.stdin is not None else []
    try:
        backend = ClientBackend(client, socket, lineage=lambda: flows.lineage(stdin_used=True))
        window = jobs or default_window(*live_capacity(socket))
        if name is not None:
            journal, source = named_stream(name, socket, as_json, source)
            backend.journal = journal

        def emit(seq: int, outcome) -> int:
            data = line_result(outcome, seq, as_json)
            if stderr:
                from .runner import show_log

                out.flush()
                show_log(outcome.id)
            if not outcome.ok:
                if verbose and outcome.traceback:
                    sys.stderr.write(outcome.traceback)
                sys.stderr.write(f"ec: line {seq}: {outcome.error_line()}\n")
            out.write(data)
            return len(data)

        progress = ProgressLine()
        mapper = Mapper(backend, socket, window=window, emit=emit, ordered=not unordered, halt=policy,
                        timeout=timeout, joblog=log, skip=skip, progress=progress, flush=out.flush,
                        recorder=journal)
        try:
            stats = mapper.run(source)
        except KeyboardInterrupt:
            progress.stop()
            sys.stderr.write(f"ec: interrupted; {len(mapper.pending)} call(s) sent and not finished keep "
                             "running (ec ls calls --status queued)\n")
            sys.exit(130)
    finally:
        if progress is not None:
            progress.stop()
        if log is not None:
            log.close()
        if journal is not None:  # an error or ^C leaves it to ec attach
            journal.close("interrupted" if sys.exc_info()[0] is not None else "finished", out.flush)
        client.close()
    if stats.broken_pipe:
        # nobody reads our output any more: exit quietly (calls not started were cancelled)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    if stats.halted:
        not_run = f"; {stats.cancelled} call(s) not started were cancelled" if stats.halted == "now" else ""
        message = (f"halted (--halt {halt}) after {stats.failed} failed and {stats.succeeded} "
                   f"succeeded call(s){not_run}")
        if policy.what != "success":
            raise TaskFailed(message)
        sys.stderr.write(f"ec: {message}\n")
        return
    if stats.failed:
        raise TaskFailed(f"{stats.failed} of {stats.sent} call(s) failed")
