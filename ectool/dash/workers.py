"""Agents and workers: status, cores, cpu and memory (psutil, for this host's processes)."""

from __future__ import annotations

from .table import KeyedTable


def _n(value) -> str:
    return "" if value is None else f"{value:g}"


class WorkersView(KeyedTable):
    COLUMNS = ("kind", "name", "host", "pid", "status", "cpu", "cpu %", "rss MB", "commit")

    def show(self, agents: list[dict], workers: list[dict]) -> None:
        rows = [(f"agent:{a['name']}", ("agent", a["name"], a["host"], str(a["pid"] or ""), a["status"],
                                        str(a["cpus"]), "", "", "")) for a in agents]
        rows += [(f"worker:{w['host']}:{w['pid']}", ("worker", w["processor"], w["host"], str(w["pid"]),
                                                     w["status"], _n(w["cpu"]), _n(w["cpu_percent"]),
                                                     _n(w["rss_mb"]), (w["commit"] or "")[:12]))
                 for w in workers]
        self.replace(rows)
