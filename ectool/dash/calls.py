"""Recent calls, filtered by status and/or socket; Enter opens the call graph."""

from __future__ import annotations

import datetime as dt

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input

from .statusbar import COLOURS
from .table import KeyedTable


def local_time(stamp) -> str:
    """A stored (naive UTC) timestamp as local wall-clock time."""
    return stamp.replace(tzinfo=dt.UTC).astimezone().strftime("%H:%M:%S") if stamp else ""


def short_commit(commit: str | None) -> str:
    """The commit that ran a call as people write it: 8 hex digits (and ``-dirty``)."""
    if not commit:
        return ""
    return commit[:8] + ("-dirty" if commit.endswith("-dirty") else "")


class CallsTable(KeyedTable):
    COLUMNS = ("submitted", "socket", "status", "attempts", "ms", "error", "commit", "id")

    def show(self, calls: list[dict]) -> None:
        self.replace([(c["id"], (local_time(c["submitted"]), c["socket"],
                                 f"[{COLOURS.get(c['status'], 'white')}]{c['status']}[/]",
                                 str(c["attempts"]), "" if c["ms"] is None else f"{c['ms']:.0f}",
                                 c["error_type"] or "", short_commit(c.get("commit")), c["id"]))
                      for c in calls])


class CallsView(Vertical):
    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: a status (failed, running, ...) and/or part of a socket name",
                    id="calls-filter")
        yield CallsTable(id="calls-table")

    def show(self, calls: list[dict]) -> None:
        self.query_one(CallsTable).show(calls)
