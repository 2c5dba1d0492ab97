"""The executor: imports a processor's module and runs calls, using the standard library only.

It runs in two ways. In-process (``ec worker --path``), the worker calls :func:`run_call`
directly. Isolated (workers started by the agent), the worker starts
``VENV_PYTHON -I -c <this file's source> MODULE SRC_DIR`` so the processor's virtualenv
holds only the processor's dependencies, and talks to it in JSON lines over stdin/stdout:

    request:  {"task": "f", "args": [...], "kwargs": {...}, "timeout": 5.0}
    response: {"status": "done", "result": "<json text>"}
              {"status": "failed", "error_type": "...", "error_message": "...", "traceback": "..."}

This module must never import anything outside the standard library.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import os
import signal
import sys
import traceback

BYTES_TAG = "$bytes"


def to_json_value(value):
    """Turn ``bytes`` anywhere inside ``value`` into tagged base64 objects."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    return value


def from_json_value(value):
    """Inverse of :func:`to_json_value`."""
    if isinstance(value, list):
        return [from_json_value(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and BYTES_TAG in value and isinstance(value[BYTES_TAG], str):
            return base64.b64decode(value[BYTES_TAG], validate=True)
        return {k: from_json_value(v) for k, v in value.items()}
    return value


def dump_value(value) -> str:
    return json.dumps(to_json_value(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class TaskTimeout(Exception):
    """The call ran longer than its socket's timeout."""


def _on_alarm(signum, frame):
    raise TaskTimeout()


def failure(error_type: str, message: str, tb: str | None = None, *, final: bool = False) -> dict:
    """A failed outcome; ``final`` failures (bad arguments, missing function) are not retried."""
    return {"status": "failed", "error_type": error_type, "error_message": message, "traceback": tb,
            "final": final}


def run_call(module, task: str, args: list, kwargs: dict, timeout: float | None) -> dict:
    """Run ``module.task(*args, **kwargs)``; the outcome as a response dict (never raises,
    except KeyboardInterrupt). Must be called from the main thread (SIGALRM timeouts)."""
    fn = getattr(module, task, None)
    if fn is None or not callable(fn):
        return failure("FunctionNotFound", f"function {task!r} not found in module {module.__name__!r}",
                       final=True)
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        return failure("TypeError", f"arguments do not match {task}{inspect.signature(fn)}: {exc}", final=True)
    except ValueError:
        pass  # no signature (some builtins): let the call decide
    try:
        if timeout:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            value = fn(*args, **kwargs)
        finally:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except TaskTimeout:
        return failure("TimeoutError", f"call exceeded the socket timeout of {timeout:g}s")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a task may raise anything, even SystemExit
        return failure(type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))
    try:
        return {"status": "done", "result": dump_value(value)}
    except (TypeError, ValueError) as exc:
        return failure("TypeError", f"result is not JSON-serialisable: {exc}", final=True)


def serve(module_name: str, src: str) -> None:
    """The isolated executor's loop: one JSON request per stdin line, one response line out."""
    if src:
        sys.path.insert(0, src)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the task's print() goes to stderr, never into the protocol
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001
        out.write(json.dumps(failure("ImportError", f"cannot import {module_name!r}: {exc}")) + "\n")
        return
    out.write(json.dumps({"status": "ready", "python": sys.version.split()[0]}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        res = run_call(module, req["task"], from_json_value(req["args"]), from_json_value(req["kwargs"]),
                       req.get("timeout"))
        out.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
