"""Processors: one row each with In/Out sparklines, status, hosts, workers, commit.
Keys ask for start/stop/pause/resume/restart (after a confirmation)."""

from __future__ import annotations

from textual.binding import Binding

from ..metrics import spark
from .table import KeyedTable

ACTIONS = {"s": "start", "x": "stop", "p": "pause", "u": "resume", "r": "restart"}
STATUS_COLOURS = {"running": "green", "paused": "yellow", "stopped": "grey50", "error": "red",
                  "deploying": "cyan", "pending": "cyan"}


class ProcessorsView(KeyedTable):
    COLUMNS = ("processor", "status", "requested", "in", "out", "out/min", "running", "workers", "hosts",
               "commit")
    BINDINGS = [Binding(key, f"app.processor('{action}')", action.capitalize()) for key, action in ACTIONS.items()]

    def show(self, processors: list[dict]) -> None:
        rows = []
        for p in processors:
            colour = STATUS_COLOURS.get(p["status"], "white")
            status = f"[{colour}]{p['status']}[/]"
            rows.append((p["name"], (p["name"], status, p["requested"], spark(p["in"]), spark(p["out"]),
                                     f"{p['rate']:g}", str(p["running"]), str(p["workers"]),
                                     ",".join(p["hosts"]), p["commit"])))
        self.replace(rows)
