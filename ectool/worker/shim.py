"""The executor: imports a processor's module and runs calls, using the standard library only.

It runs in two ways. In-process (``ec worker --path``), the worker calls :func:`run_call`
directly. Isolated (workers started by the agent), the worker starts
``VENV_PYTHON -I -c <this file's source> MODULE SRC_DIR`` so the processor's virtualenv
holds only the processor's dependencies, and talks to it in JSON lines over stdin/stdout:

    request:  {"task": "f", "args": [...], "kwargs": {...}, "timeout": 5.0}
    response: {"status": "done", "result": "<json text>", "log": "..."}
              {"status": "failed", "error_type": "...", "error_message": "...", "traceback": "...", "log": "..."}

``log`` (present only when the call wrote something) is what the task wrote to
``sys.stdout``/``sys.stderr`` during the call, the last :data:`LOG_LIMIT` characters.

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
LOG_LIMIT = 64 * 1024  # characters of a call's log kept (the tail)


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


def json_bytes(text: str) -> bytes:
    """JSON text as UTF-8. A lone surrogate (a file name read with surrogateescape, a
    ``"\\udc80"`` escape) has no UTF-8 form and the stores refuse it; inside a JSON string,
    where alone it can be, backslashreplace writes it as its JSON escape. Lossless."""
    return text.encode("utf-8", "backslashreplace")


def json_text(text: str) -> str:
    """:func:`json_bytes` as text (for a store's text column); the common case is a check."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return json_bytes(text).decode()
    return text


def dump_value(value) -> str:
    return json_text(json.dumps(to_json_value(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False))


class TaskTimeout(Exception):
    """The call ran longer than its socket's timeout."""


def _on_alarm(signum, frame):
    raise TaskTimeout()


def failure(error_type: str, message: str, tb: str | None = None, *, final: bool = False) -> dict:
    """A failed outcome; ``final`` failures (bad arguments, missing function) are not retried."""
    return {"status": "failed", "error_type": error_type, "error_message": message, "traceback": tb,
            "final": final}


class LogCapture:
    """A text stream that keeps the tail of what is written and passes it on to ``through``."""

    def __init__(self, through) -> None:
        self.through = through
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.parts.append(text)
        self.size += len(text)
        if self.size > 4 * LOG_LIMIT:
            tail = "".join(self.parts)[-LOG_LIMIT:]
            self.parts, self.size = [tail], len(tail)
        if self.through is not None:
            try:
                self.through.write(text)
            except (OSError, ValueError):
                pass
        return len(text)

    def flush(self) -> None:
        if self.through is not None:
            try:
                self.through.flush()
            except (OSError, ValueError):
                pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return getattr(self.through, "encoding", None) or "utf-8"

    def text(self) -> str:
        return "".join(self.parts)[-LOG_LIMIT:]


def run_call(module, task: str, args: list, kwargs: dict, timeout: float | None) -> dict:
    """Run ``module.task(*args, **kwargs)``; the outcome as a response dict (never raises,
    except KeyboardInterrupt), with what the task printed as ``log``. Must be called from
    the main thread (SIGALRM timeouts)."""
    capture = LogCapture(sys.stderr)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = capture
    try:
        res = _run_call(module, task, args, kwargs, timeout)
    finally:
        sys.stdout, sys.stderr = saved
    if capture.size:
        res["log"] = capture.text()
    return res


_NO_SIGNATURE = object()
_signatures: dict = {}  # function -> its inspect.Signature (or _NO_SIGNATURE), computed once


def _signature(fn):
    """``inspect.signature(fn)``, cached per function (a worker calls the same few tasks over
    and over); None for a callable without one (some builtins)."""
    try:
        sig = _signatures.get(fn)
    except TypeError:  # an unhashable callable: no caching
        sig = None
    if sig is None:
        try:
            sig = inspect.signature(fn)
        except (ValueError, TypeError):  # none to be had: the call itself will check
            sig = _NO_SIGNATURE
        try:
            if len(_signatures) < 1024:
                _signatures[fn] = sig
        except TypeError:
            pass
    return None if sig is _NO_SIGNATURE else sig


def _run_call(module, task: str, args: list, kwargs: dict, timeout: float | None) -> dict:
    fn = getattr(module, task, None)
    if fn is None or not callable(fn):
        return failure("FunctionNotFound", f"function {task!r} not found in module {module.__name__!r}",
                       final=True)
    sig = _signature(fn)
    if sig is not None:  # no signature (some builtins): let the call decide
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            return failure("TypeError", f"arguments do not match {task}{sig}: {exc}", final=True)
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
    except RecursionError:
        return failure("ValueError", "result is nested too deeply to serialise", final=True)


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
