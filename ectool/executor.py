"""Executors run a call's function: in the worker's own process, or isolated in a child
process started with the processor's virtualenv python (see :mod:`ectool.shim`)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

from . import shim
from .errors import UsageError


class ExecutorDied(Exception):
    """The isolated executor process ended in the middle of a call."""


class InProcessExecutor:
    """Imports the module into the worker process (``ec worker`` with a local path)."""

    def __init__(self, module: str, src: Path | None) -> None:
        from . import loader

        self.module = loader.load_module(module, src)

    def run(self, task: str, args: list, kwargs: dict, timeout: float | None) -> dict:
        return shim.run_call(self.module, task, args, kwargs, timeout)

    def close(self) -> None:
        pass


SHIM_SOURCE = Path(shim.__file__).read_text()
HARD_KILL_GRACE = 5.0


class SubprocessExecutor:
    """Runs calls in ``python -I -c <shim>`` from the processor's virtualenv."""

    def __init__(self, python: str, module: str, src: Path | None) -> None:
        self.argv = [python, "-I", "-c", SHIM_SOURCE, module, str(src or "")]
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, cwd=self.argv[-1] or None)
        hello = self._read(timeout=120)
        if hello is None or hello.get("status") != "ready":
            self.close()
            reason = (hello or {}).get("error_message") or "executor exited before it was ready"
            raise UsageError(reason)

    def _read(self, timeout: float | None) -> dict | None:
        assert self.proc and self.proc.stdout
        if timeout is not None:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def run(self, task: str, args: list, kwargs: dict, timeout: float | None) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        request = {"task": task, "args": shim.to_json_value(args), "kwargs": shim.to_json_value(kwargs),
                   "timeout": timeout}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._reap()
            raise ExecutorDied("executor process is gone") from None
        # SIGALRM inside the executor enforces the timeout; if the task blocks signals
        # (C code), kill it after a grace period: a hard time limit
        limit = None if timeout is None else timeout + HARD_KILL_GRACE
        started = time.monotonic()
        res = self._read(limit)
        if res is None:
            code = self.proc.poll()
            if code is None and limit is not None and time.monotonic() - started >= limit:
                self.proc.kill()
                self._reap()
                return shim.failure("TimeoutError", f"call exceeded the socket timeout of {timeout:g}s (killed)")
            self._reap()
            raise ExecutorDied(f"executor process ended with status {code} during the call")
        return res

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()


def make_executor(module: str, src: Path | None, python: str | None):
    """Isolated when a virtualenv python is given, else in-process."""
    if python and os.path.realpath(python) != os.path.realpath(os.sys.executable):
        return SubprocessExecutor(python, module, src)
    return InProcessExecutor(module, src)
