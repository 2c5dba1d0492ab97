"""The call message: a versioned JSON envelope (never pickle).

Payload values are JSON; ``bytes`` travel as ``{"$bytes": "<base64>"}`` and come back as
bytes, so non-UTF-8 stdin round-trips exactly. :func:`decode` raises :class:`BadMessage`
for anything malformed, which the worker dead-letters instead of crashing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring
from typing import Any

from .errors import UsageError
from .transport.base import join_lines
from .worker.shim import from_json_value, json_bytes, json_text, to_json_value

VERSION = 1


class BadMessage(ValueError):
    """A delivery that is not a valid call envelope."""


def new_id() -> str:
    return str(uuid.uuid4())


#: json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False), built once
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_json = _encoder.encode


def dumps(value: Any) -> str:
    """JSON text of a payload value (bytes tagged); raises UsageError for non-JSON values."""
    try:
        return json_text(_json(to_json_value(value)))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"value is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise UsageError("value is nested too deeply to serialise") from None


def _check_size(body: bytes, max_bytes: int | None) -> bytes:
    if max_bytes is not None and len(body) > max_bytes:
        raise UsageError(f"call message is {len(body)} bytes, over the limit of {max_bytes} (max_message_bytes)")
    return body


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
    pin: str | None = None  # run at this commit of the processor (ec replay; ectool.worker.pinned)

    def encode(self, max_bytes: int | None = None) -> bytes:
        """The wire form; refuses (UsageError) a message larger than ``max_bytes``."""
        # the fields in declaration order, then the version (dataclasses.asdict would deep-copy)
        data = {"id": self.id, "socket": self.socket, "task": self.task, "args": to_json_value(list(self.args)),
                "kwargs": to_json_value(dict(self.kwargs)), "root": self.root, "parent": self.parent,
                "flow": self.flow, "attempt": self.attempt, "reply_to": self.reply_to, "cont": self.cont,
                "v": VERSION}
        if self.pin is not None:  # absent unless pinned: messages stay as they were
            data["pin"] = self.pin
        try:
            body = json_bytes(_json(data))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"call arguments are not JSON-serialisable: {exc}") from None
        except RecursionError:
            raise UsageError("call arguments are nested too deeply to serialise") from None
        return _check_size(body, max_bytes)

    def next_attempt(self) -> CallMessage:
        return replace(self, attempt=self.attempt + 1)


class CallEncoder:
    """Wire forms of many first-attempt calls to one socket that differ only in id, root
    and arguments (one submit): the shared fields are serialised once. ``encode`` gives the
    same JSON object as :meth:`CallMessage.encode` (same keys, same order) and the
    ``{"args": ..., "kwargs": ...}`` text a call's row stores, from one serialisation of
    the arguments."""

    def __init__(self, socket: str, task: str, *, parent: str | None = None, flow: str | None = None,
                 reply_to: str | None = None, cont: dict[str, Any] | None = None,
                 max_bytes: int | None = None, pin: str | None = None) -> None:
        self.max_bytes = max_bytes
        self.head = f',"socket":{encode_basestring(socket)},"task":{encode_basestring(task)},"args":'
        shared: dict[str, Any] = {"parent": parent, "flow": flow, "attempt": 1, "reply_to": reply_to, "cont": cont,
                                  "v": VERSION}
        if pin is not None:
            shared["pin"] = pin
        try:
            tail = _json(shared)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"call continuation is not JSON-serialisable: {exc}") from None
        self.tail = "," + tail[1:]

    def encode(self, call_id: str, root: str, args: Any, kwargs: Any) -> tuple[bytes, str]:
        """(message body, the row's ``args`` text) of one call; UsageError for arguments
        that are not JSON or a message over ``max_bytes``."""
        try:
            a = json_text(_json(to_json_value(list(args))))
            k = json_text(_json(to_json_value(dict(kwargs))))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"call arguments are not JSON-serialisable: {exc}") from None
        except RecursionError:
            raise UsageError("call arguments are nested too deeply to serialise") from None
        body = (f'{{"id":{encode_basestring(call_id)}{self.head}{a},"kwargs":{k},'
                f'"root":{encode_basestring(root)}{self.tail}').encode()
        return _check_size(body, self.max_bytes), f'{{"args":{a},"kwargs":{k}}}'


def bundle(bodies: list[bytes], size: int, max_bytes: int | None = None) -> list[bytes]:
    """Call envelopes joined into messages of at most ``size`` calls each (newline-separated;
    compact JSON never holds a raw newline), none over ``max_bytes`` unless a single call
    is (each was checked on its own). Under load most of a call's transport cost is per
    message: a bundle pays it once for its calls. A worker settles a bundle's delivery once
    every call in it is settled (:mod:`ectool.worker.parts`)."""
    return bodies if size <= 1 else join_lines(bodies, max_bytes, size)


def unbundle(body: bytes) -> list[bytes]:
    """The call envelopes in one message (see :func:`bundle`): one for a plain message.

    A message with newlines that is one JSON document (written by hand, pretty-printed) is
    one call; otherwise each non-empty line is one: a bundle's envelopes, or the pieces of
    a malformed message, each then decoded (or dead-lettered) on its own. Telling the two
    apart costs a bundle the parse of its first envelope (``json.loads`` stops there)."""
    if b"\n" not in body:
        return [body]
    try:
        json.loads(body)
    except (ValueError, RecursionError):  # more than one document, or not JSON at all
        return [line for line in body.split(b"\n") if line.strip()] or [body]
    return [body]


def bundle_size(calls: int, most: int) -> int:
    """Calls per message for a submit of ``calls`` calls: none bundled for a few (each
    message can go to a different worker), up to ``most`` for many (at least 8 messages per
    submit stay free to spread; a worker hands the rest of a bundle back when its calls
    turn out slow, see :mod:`ectool.worker.parts`)."""
    return max(1, min(most, calls // 8))


def decode(body: bytes) -> CallMessage:
    """Parse and validate a wire message; :class:`BadMessage` says what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    except RecursionError:
        raise BadMessage("nested too deeply") from None
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
            attempt=data["attempt"], reply_to=data.get("reply_to"), cont=data.get("cont"), pin=_pin(data))
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"bad field: {exc}") from None
    except RecursionError:
        raise BadMessage("arguments nested too deeply") from None


def _pin(data: dict[str, Any]) -> str | None:
    pin = data.get("pin")
    if pin is not None and not isinstance(pin, str):
        raise TypeError("pin is not a string")
    return pin


def peek_id(body: bytes) -> str | None:
    """The call id of a message that failed to decode (of a bundle, its first call), when it
    can still be read."""
    try:
        value = json.loads(unbundle(body)[0]).get("id")  # a bundle's: its first call's
        return value if isinstance(value, str) and len(value) <= 36 else None
    except Exception:
        return None
