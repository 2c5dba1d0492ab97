"""Plugs: the data-flow edges, source socket -> target socket."""

from __future__ import annotations

from .table import KeyedTable


class FlowView(KeyedTable):
    COLUMNS = ("plug", "source", "", "target", "argument")

    def show(self, plugs: list[dict]) -> None:
        self.replace([(p["name"], (p["name"], p["source"], "->", p["target"], p["argument"] or ""))
                      for p in plugs])
