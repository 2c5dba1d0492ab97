"""Turning command-line words and stdin into call arguments (pure functions)."""

from __future__ import annotations

import ast
import json
from typing import Any

from .errors import UsageError


def _loads(text: str, what: str) -> Any:
    """``json.loads``, with nesting too deep for this Python a usage error (not a traceback)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError(f"{what} is nested too deeply to parse") from None


def parse_word(word: str) -> Any:
    """A JSON value when the word parses as one (``3``, ``[1,2]``, ``"x"``), else the string."""
    try:
        return _loads(word, "an argument")
    except ValueError:
        return word


def parse_data(text: str) -> tuple[list[Any], dict[str, Any]]:
    """The seed's ``--data``: a JSON or Python literal, never evaluated as code.

    A list gives positional arguments, a dict keyword arguments, anything else one argument.
    """
    try:
        value = _loads(text, "--data")
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = text
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        return value, {}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise UsageError("--data dict keys must be strings (keyword arguments)")
        return [], value
    return [value], {}


def stdin_value(raw: bytes) -> str | bytes:
    """Stdin as one argument: text without its final newline, or bytes if not UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return text[:-1] if text.endswith("\n") else text


def parse_kwargs(items: tuple[str, ...]) -> dict[str, Any]:
    """``-k name=value`` options -> keyword arguments (values parsed like words)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"expected NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if not key.isidentifier():
            raise UsageError(f"bad keyword argument name {key!r}")
        out[key] = parse_word(value)
    return out
