"""Nodes, agents and workers: state, cores, cpu and memory (psutil, for this host's
processes). A lost, cordoned or draining host is shown as such (:mod:`ectool.liveness`)."""

from __future__ import annotations

from collections.abc import Sequence

from .table import KeyedTable


def _n(value) -> str:
    return "" if value is None else f"{value:g}"


def _load(node: dict) -> str:
    """A node's 1-minute load as a percentage of its cores (the cpu % column)."""
    if node.get("load") is None or not node.get("cpus"):
        return ""
    return f"{100 * node['load'] / node['cpus']:.0f}"


class WorkersView(KeyedTable):
    COLUMNS = ("kind", "name", "host", "pid", "status", "cpu", "cpu %", "rss MB", "commit / runs")

    def show(self, agents: list[dict], workers: list[dict], nodes: Sequence[dict] = ()) -> None:
        rows = [(f"node:{n['name']}", ("node", n["name"], n["name"], "", n["state"], str(n["cpus"]), _load(n),
                                       "", ",".join(n["processors"]))) for n in nodes]
        rows += [(f"agent:{a['name']}", ("agent", a["name"], a["host"], str(a["pid"] or ""), a["status"],
                                         str(a["cpus"]), "", "", "")) for a in agents]
        rows += [(f"worker:{w['host']}:{w['pid']}", ("worker", w["processor"], w["host"], str(w["pid"]),
                                                     w["status"], _n(w["cpu"]), _n(w["cpu_percent"]),
                                                     _n(w["rss_mb"]), (w["commit"] or "")[:12]))
                 for w in workers]
        self.replace(rows)
