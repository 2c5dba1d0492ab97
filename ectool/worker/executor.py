"""Executors run a call's function: in the worker's own process, or isolated in a child
process started with the processor's virtualenv python (see :mod:`ectool.worker.shim`)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UsageError
from . import shim


class ExecutorDied(Exception):
    """The isolated executor process ended in the middle of a call."""


def memory_limiter(mib: int | None):
    """A ``preexec_fn`` capping a child's address space at ``mib`` MiB (RLIMIT_AS), or None.

    A task that allocates past it gets MemoryError (a failed call, retried per policy)
    instead of pushing the host into the OOM killer."""
    if not mib:
        return None
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mib * 2**20, mib * 2**20))

    return limit


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

    def __init__(self, python: str, module: str, src: Path | None, memory_limit: int | None = None) -> None:
        self.argv = [python, "-I", "-c", SHIM_SOURCE, module, str(src or "")]
        self.proc: subprocess.Popen | None = None
        self.preexec = memory_limiter(memory_limit)
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, cwd=self.argv[-1] or None, preexec_fn=self.preexec)
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
        proc = self.proc
        assert proc is not None and proc.stdin is not None  # started just above
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            self._reap()
            raise ExecutorDied("executor process is gone") from None
        # SIGALRM inside the executor enforces the timeout; if the task blocks signals
        # (C code), kill it after a grace period: a hard time limit
        limit = None if timeout is None else timeout + HARD_KILL_GRACE
        started = time.monotonic()
        res = self._read(limit)
        if res is None:
            code = proc.poll()
            if code is None and limit is not None and time.monotonic() - started >= limit:
                proc.kill()
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
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()


LOG_TAIL = 2000  # characters of a failed script's stderr in its error message


class ExecExecutor:
    """Runs a script processor's calls: the socket's task is an executable file relative to
    the processor's checkout, run once per call in the checkout with the socket's timeout.

    Input: a str or bytes first argument is written to the script's stdin (a str followed by
    a newline, since ``ec run`` strips one from its stdin); the other arguments are argv
    (strings as they are, anything else as JSON); keyword arguments are refused. Output:
    stdout is the result, a str (with one trailing newline removed, as ``ec run`` prints one)
    when it is valid UTF-8, else bytes exactly; stderr is the call's log; a non-zero exit
    fails the call with ``ExitStatus`` ("exit N: <stderr tail>")."""

    def __init__(self, src: Path | None, memory_limit: int | None = None) -> None:
        if src is None or not Path(src).is_dir():
            raise UsageError(f"script processor checkout {src} is not a directory")
        self.root = Path(src).resolve()
        self.preexec = memory_limiter(memory_limit)

    def script(self, task: str) -> Path | dict:
        path = (self.root / task).resolve()
        if Path(task).is_absolute() or not path.is_relative_to(self.root):
            return shim.failure("FunctionNotFound", f"script {task!r} is outside the processor's checkout",
                                final=True)
        if not path.is_file() or not os.access(path, os.X_OK):
            return shim.failure("FunctionNotFound", f"script {task!r} is not an executable file in the "
                                "processor's checkout", final=True)
        return path

    def run(self, task: str, args: list, kwargs: dict, timeout: float | None) -> dict:
        path = self.script(task)
        if isinstance(path, dict):
            return path
        if kwargs:
            return shim.failure("TypeError", f"script {task!r} takes no keyword arguments", final=True)
        data, rest = b"", list(args)
        if rest and isinstance(rest[0], str | bytes):
            first = rest.pop(0)
            data = first if isinstance(first, bytes) else (first + "\n").encode("utf-8", "surrogateescape")
        argv = [a if isinstance(a, str) else shim.dump_value(a) for a in rest]
        proc = subprocess.Popen([str(path), *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=self.root, start_new_session=True,
                                preexec_fn=self.preexec)
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            out, err = proc.communicate()
            res = shim.failure("TimeoutError", f"call exceeded the socket timeout of {timeout:g}s (killed)")
            return self._with_log(res, err)
        except BaseException:
            self._kill(proc)
            proc.wait()
            raise
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip()[-LOG_TAIL:]
            code = proc.returncode if proc.returncode > 0 else f"signal {-proc.returncode}"
            return self._with_log(shim.failure("ExitStatus", f"exit {code}: {tail}".rstrip(": ")), err)
        try:
            text = out.decode("utf-8")
            value: str | bytes = text[:-1] if text.endswith("\n") else text
        except UnicodeDecodeError:
            value = out
        return self._with_log({"status": "done", "result": shim.dump_value(value)}, err)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the script and whatever it started
        except (ProcessLookupError, PermissionError):
            proc.kill()

    @staticmethod
    def _with_log(res: dict, err: bytes) -> dict:
        if err:
            res["log"] = err.decode("utf-8", "replace")[-shim.LOG_LIMIT:]
        return res

    def close(self) -> None:
        pass


def make_executor(module: str, src: Path | None, python: str | None, runtime: str = "python",
                  memory_limit: int | None = None):
    """A script executor for ``exec`` processors; else isolated when a virtualenv python
    is given or memory is limited (the limit must cover the task, not the worker),
    in-process otherwise."""
    if runtime == "exec":
        return ExecExecutor(src, memory_limit)
    if memory_limit or (python and os.path.realpath(python) != os.path.realpath(sys.executable)):
        return SubprocessExecutor(python or sys.executable, module, src, memory_limit)
    return InProcessExecutor(module, src)
