"""Plugs: the data-flow edges, source socket -> target socket; and schedules, the flows'
starts (schedule -> socket, with its next tick, lateness, missed ticks and failures)."""

from __future__ import annotations

from .table import KeyedTable


class FlowView(KeyedTable):
    COLUMNS = ("plug", "source", "", "target", "argument")

    def show(self, plugs: list[dict], schedules: list[dict] | None = None) -> None:
        rows = [(p["name"], (p["name"], p["source"], "->", p["target"], p["argument"] or "")) for p in plugs]
        rows += [(f"schedule:{s['schedule']}",
                  (f"schedule {s['schedule']}", "paused" if s["paused"] else f"next {(s['next_tick'] or '')[11:19]}",
                   "->", s["socket"], f"late {s['late_s']:g}s fired {s['fired']} missed {s['missed']} "
                                      f"failed {s['failed']}"))
                 for s in schedules or []]
        self.replace(rows)
