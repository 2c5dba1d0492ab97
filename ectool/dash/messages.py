"""Messages that carry data from worker threads to the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from .data import Snapshot


@dataclass
class SnapshotReady(Message):
    """A fresh read of the store."""

    snapshot: Snapshot


@dataclass
class EventsArrived(Message):
    """Events from the bus since the last batch (oldest first)."""

    events: list[dict[str, Any]]


@dataclass
class Problem(Message):
    """The store or the broker is unreachable (``text``), or back (``text`` is None)."""

    source: str  # "store" or "broker"
    text: str | None


@dataclass
class CallGraphReady(Message):
    """A call's workflow: the root call and a parent -> children map."""

    root: Any
    children: dict
