"""The call message: a versioned JSON envelope (never pickle).

Payload values are JSON; ``bytes`` travel as ``{"$bytes": "<base64>"}`` and come back as
bytes, so non-UTF-8 stdin round-trips exactly. :func:`decode` raises :class:`BadMessage`
for anything malformed, which the worker dead-letters instead of crashing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import UsageError
from .shim import from_json_value, to_json_value

VERSION = 1


class BadMessage(ValueError):
    """A delivery that is not a valid call envelope."""


def new_id() -> str:
    return str(uuid.uuid4())


def dumps(value: Any) -> str:
    """JSON text of a payload value (bytes tagged); raises UsageError for non-JSON values."""
    try:
        return json.dumps(to_json_value(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"value is not JSON-serialisable: {exc}") from None


@dataclass(frozen=True)
class CallMessage:
    """One call of a socket. ``attempt`` counts retries after exceptions (1 = first)."""

    id: str
    socket: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    root: str = ""
    parent: str | None = None
    flow: str | None = None
    attempt: int = 1
    reply_to: str | None = None
    cont: dict[str, Any] | None = None

    def encode(self, max_bytes: int | None = None) -> bytes:
        """The wire form; refuses (UsageError) a message larger than ``max_bytes``."""
        data = asdict(self)
        data["v"] = VERSION
        data["args"] = to_json_value(list(self.args))
        data["kwargs"] = to_json_value(dict(self.kwargs))
        try:
            body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise UsageError(f"call arguments are not JSON-serialisable: {exc}") from None
        if max_bytes is not None and len(body) > max_bytes:
            raise UsageError(f"call message is {len(body)} bytes, over the limit of {max_bytes} (max_message_bytes)")
        return body

    def next_attempt(self) -> CallMessage:
        return replace(self, attempt=self.attempt + 1)


def decode(body: bytes) -> CallMessage:
    """Parse and validate a wire message; :class:`BadMessage` says what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage("not a JSON object")
    if data.get("v") != VERSION:
        raise BadMessage(f"unsupported message version {data.get('v')!r}")
    for key, kind in (("id", str), ("socket", str), ("task", str), ("args", list), ("kwargs", dict), ("attempt", int)):
        if not isinstance(data.get(key), kind):
            raise BadMessage(f"field {key!r} missing or not a {kind.__name__}")
    try:
        return CallMessage(
            id=data["id"], socket=data["socket"], task=data["task"],
            args=from_json_value(data["args"]), kwargs=from_json_value(data["kwargs"]),
            root=data.get("root") or data["id"], parent=data.get("parent"), flow=data.get("flow"),
            attempt=data["attempt"], reply_to=data.get("reply_to"), cont=data.get("cont"))
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"bad field: {exc}") from None


def peek_id(body: bytes) -> str | None:
    """The call id of a message that failed to decode, when it can still be read."""
    try:
        value = json.loads(body).get("id")
        return value if isinstance(value, str) and len(value) <= 36 else None
    except Exception:
        return None
