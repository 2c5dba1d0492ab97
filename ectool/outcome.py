"""A call's outcome as the store records it and as replies carry it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .messages import from_json_value
from .store.models import FINAL_CALL_STATUS


@dataclass
class Outcome:
    id: str
    status: str
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    attempts: int = 0

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

    def encode(self) -> bytes:
        """The reply's wire form; the result travels as its stored JSON text. (Not
        dataclasses.asdict: it would deep-copy the decoded result only to drop it.)"""
        return json.dumps({"id": self.id, "status": self.status, "error_type": self.error_type,
                           "error_message": self.error_message, "traceback": self.traceback,
                           "attempts": self.attempts, "result": self.result_json},
                          separators=(",", ":")).encode()

    result_json: str | None = None  # the stored JSON text of the result

    @classmethod
    def decode(cls, body: bytes) -> Outcome | None:
        try:
            data = json.loads(body)
            out = cls(**{k: data.get(k) for k in ("id", "status", "error_type", "error_message", "traceback")},
                      attempts=data.get("attempts") or 0)
            out.result_json = data.get("result")
            out.result = from_json_value(json.loads(out.result_json)) if out.result_json is not None else None
            return out
        except (ValueError, TypeError, AttributeError, RecursionError):
            return None

    @classmethod
    def from_row(cls, row) -> Outcome:
        out = cls(id=row.id, status=row.status, error_type=row.error_type, error_message=row.error_message,
                  traceback=row.traceback, attempts=row.attempts)
        out.result_json = row.result
        out.result = from_json_value(json.loads(row.result)) if row.result is not None else None
        return out
