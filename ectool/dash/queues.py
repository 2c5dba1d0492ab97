"""Queues: depth (broker), calls waiting (store), rates in and out."""

from __future__ import annotations

from ..metrics import spark
from .table import KeyedTable


class QueuesView(KeyedTable):
    COLUMNS = ("queue", "type", "kind", "sockets", "depth", "waiting", "in/min", "out/min", "out", "max")

    def show(self, queues: list[dict]) -> None:
        self.replace([(q["name"], (q["name"], q["type"], q["kind"], str(q["sockets"]),
                                   "" if q["depth"] is None else str(q["depth"]), str(q["queued"]),
                                   f"{q['in_per_min']:g}", f"{q['out_per_min']:g}", spark(q["out"]),
                                   "" if q["max_length"] is None else str(q["max_length"])))
                      for q in queues])
