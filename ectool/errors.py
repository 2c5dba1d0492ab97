"""Named exit codes and the error types that carry them.

Expected failures raise an :class:`EcError` subclass; the CLI prints its message as one
line on stderr and exits with its code. Anything else is a bug and may show a traceback.
"""

from __future__ import annotations

OK = 0
TASK_FAILED = 1
USAGE = 2
UNREACHABLE = 3
TIMEOUT = 4
PERMISSION = 5


class EcError(Exception):
    """An expected failure with an exit code and a one-line message."""

    exit_code = USAGE

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(EcError):
    """Bad input from the caller: unknown object, duplicate name, malformed value."""

    exit_code = USAGE


class NotFound(UsageError):
    """A named object does not exist."""


class Conflict(UsageError):
    """An object with that name already exists, or the change would orphan others."""


class Unreachable(EcError):
    """The store or the broker cannot be reached."""

    exit_code = UNREACHABLE


class CallTimeout(EcError):
    """Waiting for a call's outcome took longer than allowed; the call stays queued."""

    exit_code = TIMEOUT

    def __init__(self, message: str, call_ids: list[str] | None = None):
        super().__init__(message)
        self.call_ids = call_ids or []


class TaskFailed(EcError):
    """A call ended failed, dead or cancelled."""

    exit_code = TASK_FAILED


class PermissionDenied(EcError):
    """The acting user lacks a privilege."""

    exit_code = PERMISSION


class ConfigError(UsageError):
    """The configuration file or a configured URL is malformed."""


class SubmitError(EcError):
    """Pipelined calls could not be made durable (their rows or their messages); it names
    them in ``call_ids``. None of them is reported sent."""

    exit_code = UNREACHABLE

    def __init__(self, message: str, call_ids: list[str] | None = None):
        self.call_ids = list(call_ids or [])
        shown = " ".join(self.call_ids[:5]) + (f" (+{len(self.call_ids) - 5} more)" if len(self.call_ids) > 5 else "")
        super().__init__(f"{len(self.call_ids)} call(s) not sent: {shown}: {message}")
