"""The status bar: how many calls are in each state (from the store)."""

from __future__ import annotations

from textual.widgets import Static

COLOURS = {"queued": "yellow", "running": "cyan", "retrying": "magenta", "done": "green",
           "failed": "red", "dead": "red", "cancelled": "grey50"}
SHOWN = ("queued", "running", "retrying", "done", "failed", "dead")


def status_text(counts: dict[str, int]) -> str:
    return "  ".join(f"[{COLOURS[s]}]{s}[/] [b]{counts.get(s, 0)}[/b]" for s in SHOWN)


class StatusBar(Static):
    def __init__(self) -> None:
        super().__init__("", id="status")
        self.counts: dict[str, int] = {}

    def show(self, counts: dict[str, int]) -> None:
        self.counts = dict(counts)
        self.update(status_text(counts))
