"""cpu and memory of this host's processes and of the host itself (psutil, imported when
first measured)."""

from __future__ import annotations

import os
import socket as _socket
from collections.abc import Iterable
from typing import Any

HOST = _socket.gethostname()


class Usage:
    """cpu% and RSS of local processes between successive samples (no sleeping: keep one
    instance and call :meth:`fill` on every refresh; the first sample of a process says 0)."""

    def __init__(self) -> None:
        self.procs: dict[int, Any] = {}
        self.host_cpu: float | None = None

    def fill(self, rows: Iterable[dict[str, Any]]) -> None:
        """Set ``cpu_percent`` and ``rss_mb`` on rows (with ``host`` and ``pid``) of this host."""
        import psutil

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

    def host(self, interval: float | None = None) -> dict[str, Any]:
        """This host's cpu% since the last call (or over ``interval`` seconds), memory use
        and load average."""
        import psutil

        cpu = psutil.cpu_percent(interval)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"host": HOST, "cpu_percent": cpu, "memory_percent": psutil.virtual_memory().percent,
                "load1": round(load, 2) if load is not None else None, "cpus": os.cpu_count()}
