"""A call's outcome as the store records it and as replies carry it."""

from __future__ import annotations

import json
from typing import Any

from .messages import from_json_value
from .store.models import FINAL_CALL_STATUS

_UNREAD = object()


class Outcome:
    """``result_json`` is the result's JSON text as stored; ``result`` the value, decoded
    the first time it is asked for (a worker that only records and replies never is)
    unless it was given."""

    __slots__ = ("id", "status", "error_type", "error_message", "traceback", "attempts", "result_json", "_result")

    def __init__(self, id: str, status: str, result: Any = _UNREAD, error_type: str | None = None,  # noqa: A002
                 error_message: str | None = None, traceback: str | None = None, attempts: int = 0,
                 result_json: str | None = None) -> None:
        self.id, self.status, self._result = id, status, result
        self.error_type, self.error_message, self.traceback = error_type, error_message, traceback
        self.attempts, self.result_json = attempts, result_json

    @property
    def result(self) -> Any:
        if self._result is _UNREAD:
            self._result = from_json_value(json.loads(self.result_json)) if self.result_json is not None else None
        return self._result

    def __repr__(self) -> str:
        return (f"Outcome({self.id!r}, {self.status!r}, error_type={self.error_type!r}, "
                f"error_message={self.error_message!r}, attempts={self.attempts}, result_json={self.result_json!r})")

    @property
    def final(self) -> bool:
        return self.status in FINAL_CALL_STATUS

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def error_line(self) -> str:
        """One line for stderr: ``call ID failed: ValueError: boom``."""
        what = f"{self.error_type}: {self.error_message}" if self.error_type else (self.error_message or self.status)
        return f"call {self.id} {self.status}: {what}"

    def encode(self, payload: bool = True) -> bytes:
        """The reply's wire form; the result travels as its stored JSON text. Without
        ``payload``, no result and no traceback (a reply too big to send: the caller reads
        the store)."""
        return json.dumps({"id": self.id, "status": self.status, "error_type": self.error_type,
                           "error_message": self.error_message, "traceback": self.traceback if payload else None,
                           "attempts": self.attempts, "result": self.result_json if payload else None},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> Outcome | None:
        """A reply's outcome (its result decoded now: a malformed one is no reply), or None."""
        try:
            data = json.loads(body)
            out = cls(**{k: data.get(k) for k in ("id", "status", "error_type", "error_message", "traceback")},
                      attempts=data.get("attempts") or 0, result_json=data.get("result"))
            out.result  # noqa: B018 - decoded here, inside the try
            return out
        except (ValueError, TypeError, AttributeError, RecursionError):
            return None

    @classmethod
    def from_row(cls, row) -> Outcome:
        return cls(id=row.id, status=row.status, error_type=row.error_type, error_message=row.error_message,
                   traceback=row.traceback, attempts=row.attempts, result_json=row.result)
