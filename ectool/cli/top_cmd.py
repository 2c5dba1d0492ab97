"""``ec top``: a compact, refreshing view of the busiest sockets and workers."""

from __future__ import annotations

import datetime as dt
import os
import time

import click

from .env import Env
from .group import pass_env


def frame(since: dt.timedelta, limit: int, usage, transport=None, namespace: str = ""):
    """One screenful as a rich renderable: call counts, this host, busiest sockets, workers."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from .. import metrics
    from ..store.models import now

    start = now() - since
    counts = metrics.status_counts()
    host = usage.host()
    head = Text(f"ec top  {now().isoformat(timespec='seconds')}Z  window {int(since.total_seconds())}s  "
                f"{host['host']} cpu {host['cpu_percent']:.0f}% mem {host['memory_percent']:.0f}% "
                f"load {host['load1']}\n" + "  ".join(f"{k} {v}" for k, v in counts.items()))
    sockets = Table(title="busiest sockets", title_justify="left", expand=False)
    for col in ("socket", "in/min", "out/min", "p50 ms", "p95 ms", "fail %", "queued", "running", "depth"):
        sockets.add_column(col, justify="left" if col == "socket" else "right")
    busy = [r for r in metrics.socket_stats(start, transport=transport, namespace=namespace)
            if r["in"] or r["out"] or r["queued"] or r["running"] or r["retrying"] or r["depth"]]
    for r in busy[:limit]:
        fail = "" if r["failure_rate"] is None else f"{r['failure_rate'] * 100:.1f}"
        sockets.add_row(r["socket"], f"{r['in_per_min']:g}", f"{r['out_per_min']:g}", _n(r["p50_ms"]),
                        _n(r["p95_ms"]), fail, str(r["queued"]), str(r["running"]), _n(r["depth"]))
    workers = Table(title="workers", title_justify="left", expand=False)
    for col in ("processor", "host", "pid", "status", "cpu %", "rss MB", "calls"):
        workers.add_column(col, justify="right" if col in ("pid", "cpu %", "rss MB", "calls") else "left")
    rows = metrics.worker_stats(start, usage=usage)
    rows.sort(key=lambda r: (-(r["cpu_percent"] or 0), -r["calls"]))
    for w in rows[:limit]:
        workers.add_row(w["processor"], w["host"], str(w["pid"]), w["status"], _n(w["cpu_percent"]),
                        _n(w["rss_mb"]), str(w["calls"]))
    return Group(head, sockets, workers)


def _n(value) -> str:
    return "" if value is None else f"{value:g}"


@click.command()
@click.option("--interval", default=2.0, show_default=True, type=float, help="Seconds between refreshes.")
@click.option("--since", default="5m", show_default=True, help="Window for rates and latencies (30s, 10m, 1h).")
@click.option("--limit", default=10, show_default=True, type=int, help="Rows per table.")
@click.option("--once", is_flag=True, help="Print one frame and exit (for tests and pipes).")
@pass_env
def top(env: Env, interval, since, limit, once) -> None:
    """A refreshing view of the busiest sockets and workers (Ctrl-C quits)."""
    from rich.console import Console

    from .. import metrics
    from ..calls import parse_since
    from ..store.models import now
    from .stats_cmd import open_transport_or_none

    env.store()
    window = now() - parse_since(since)
    usage = metrics.Usage()
    transport = open_transport_or_none(env)
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=140)  # piped: do not squeeze the tables into 80 columns

    def render():
        return frame(window, limit, usage, transport, env.config.namespace)

    try:
        if once or not console.is_terminal:
            console.print(render())
            while not once:  # piped: a frame every interval, appended
                time.sleep(interval)
                console.print(render())
            return
        from rich.live import Live

        with Live(render(), console=console, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        pass
