"""Shared bits of the benchmarks: service URLs, statistics, PostgreSQL schemas, a small
table printer and the one-JSON-line convention."""

from __future__ import annotations

import json
import os
import statistics
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # tests/helpers.py: repo, network, workers

PG = os.environ.get("EC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("EC_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: deliveries each ec worker process holds ahead (``ec worker --prefetch``)
PREFETCH = int(os.environ.get("EC_BENCH_PREFETCH", "32"))


def ec_argv() -> list[str]:
    """The ``ec`` command as users run it: the venv's entry point, else ``python -m ectool``."""
    exe = Path(sys.executable).with_name("ec")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ectool"]


# -- statistics ---------------------------------------------------------------------------


def pct(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5 - 1e-9)))
    return sorted_values[rank - 1]


def latency_summary(seconds: list[float], prefix: str) -> dict[str, float]:
    """``{prefix}_p50_ms``, ``{prefix}_p99_ms`` (and min/max) from latencies in seconds."""
    ms = sorted(s * 1000 for s in seconds)
    return {f"{prefix}_p50_ms": round(statistics.median(ms), 3),
            f"{prefix}_p99_ms": round(pct(ms, 0.99), 3),
            f"{prefix}_min_ms": round(ms[0], 3), f"{prefix}_max_ms": round(ms[-1], 3)}


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def request_reply(submit, collect, calls: int, seq: int) -> tuple[float, float, list[float]]:
    """The ceiling's and the floor's workloads: ``submit(calls)`` then ``collect(calls)``
    (seconds the submit took, seconds in all), then ``seq`` round trips one after another
    (``submit(1)``, then ``collect(replies expected so far)``): their latencies, seconds."""
    import time

    started = time.perf_counter()
    submit(calls)
    submitted = time.perf_counter()
    collect(calls)
    finished = time.perf_counter()
    latencies = []
    for i in range(seq):
        begin = time.perf_counter()
        submit(1)
        collect(calls + i + 1)
        latencies.append(time.perf_counter() - begin)
    return submitted - started, finished - started, latencies


# -- PostgreSQL -----------------------------------------------------------------------------


def pg_schema(prefix: str = "ec_bench") -> str:
    """A fresh, uniquely named schema in the test database."""
    import psycopg2

    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(PG)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE SCHEMA {schema}")
    conn.close()
    return schema


def drop_schema(schema: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG)
    conn.autocommit = True
    conn.cursor().execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.close()


# -- processes --------------------------------------------------------------------------------
# (a process tree is stopped by pid with tests/helpers.py's stop_tree)


def rss_mb(pids: Sequence[int]) -> list[float | None]:
    import psutil

    out: list[float | None] = []
    for pid in pids:
        try:
            out.append(round(psutil.Process(pid).memory_info().rss / 2**20, 1))
        except psutil.Error:
            out.append(None)
    return out


def cpu_seconds(pids: Sequence[int] = ()) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this host's PostgreSQL and RabbitMQ
    processes and by ``pids`` ("workers"): take one before and one after a workload."""
    import psutil

    used = {"postgres": 0.0, "rabbitmq": 0.0, "workers": 0.0}
    wanted = set(pids)
    for p in psutil.process_iter(["pid", "name"]):
        name = p.info["name"] or ""
        group = ("workers" if p.info["pid"] in wanted else "postgres" if name.startswith("postgres")
                 else "rabbitmq" if name.startswith(("beam", "erl")) else None)
        if group is None:
            continue
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        used[group] += t.user + t.system
    return used


def cpu_per_item(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
    """Microseconds of CPU per item, per group, between two :func:`cpu_seconds`. A process
    that exited meanwhile drops out of ``after``; groups that would go negative read 0."""
    return {k: round(max(after.get(k, 0.0) - v, 0.0) / max(items, 1) * 1e6) for k, v in before.items()}


# -- output -------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain, right-aligned text table (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(result: dict[str, Any]) -> None:
    """The one final JSON line every bench prints (``compare`` parses it)."""
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=False), flush=True)


def machine() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version()}
