"""cpu and memory of this host's processes and of the host itself (psutil, imported when
first measured)."""

from __future__ import annotations

import os
import socket as _socket
import time
from collections.abc import Iterable
from typing import Any

HOST = _socket.gethostname()


class Usage:
    """cpu% and RSS of local processes between successive samples (no sleeping: keep one
    instance and call :meth:`fill` on every refresh; the first sample of a process says 0)."""

    def __init__(self) -> None:
        self.procs: dict[int, Any] = {}
        self.host_cpu: float | None = None

    def fill(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Set ``cpu_percent`` and ``rss_mb`` on rows (with ``host`` and ``pid``) of this host;
        return those whose process is gone."""
        import psutil

        gone = []
        for row in rows:
            if row.get("host") != HOST or not row.get("pid"):
                continue
            p = self.procs.get(row["pid"])
            try:
                if p is None:
                    p = self.procs[row["pid"]] = psutil.Process(row["pid"])
                    p.cpu_percent(None)
                row["cpu_percent"] = round(p.cpu_percent(None), 1)
                row["rss_mb"] = round(p.memory_info().rss / 2**20, 1)
            except psutil.Error:
                self.procs.pop(row["pid"], None)
                gone.append(row)
        return gone

    def host(self, interval: float | None = None) -> dict[str, Any]:
        """This host's cpu% since the last call (or over ``interval`` seconds), memory use
        and load average."""
        import psutil

        cpu = psutil.cpu_percent(interval)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"host": HOST, "cpu_percent": cpu, "memory_percent": psutil.virtual_memory().percent,
                "load1": round(load, 2) if load is not None else None, "cpus": os.cpu_count()}


def sample(rows: list[dict[str, Any]], seconds: float = 0.1) -> None:
    """Fill cpu% (measured over ``seconds``) and RSS on worker rows of this host at once,
    for a one-shot view (``ec ls workers``, ``ec stats``; the dashboard keeps a
    :class:`Usage` between refreshes instead). A local worker whose process is gone is
    shown ``lost`` unless its row says it stopped."""
    usage = Usage()
    for row in usage.fill(rows):
        if row["status"] != "stopped":
            row["status"] = "lost"
    if usage.procs:
        time.sleep(seconds)
        usage.fill(rows)
