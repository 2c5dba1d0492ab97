"""``ec stats``: per-socket rates, latencies and failures from the store."""

from __future__ import annotations

import click

from ..errors import EcError, NotFound
from ..output import dumps, render
from .env import Env
from .group import pass_env

COLUMNS = ["socket", "in", "out", "in_per_min", "out_per_min", "p50_ms", "p95_ms", "p99_ms",
           "wait_p50_ms", "failure_rate", "queued", "running", "depth"]
WORKER_COLUMNS = ["processor", "host", "pid", "status", "cpu_percent", "rss_mb", "calls", "commit"]
MINUTE_COLUMNS = ["minute", "socket", "in", "out", "done", "failed", "dead", "retried", "p50_ms", "p95_ms",
                  "p99_ms", "wait_p50_ms"]
SCHEDULE_COLUMNS = ["schedule", "socket", "paused", "next_tick", "late_s", "fired", "missed", "failed"]
#: seconds `ec stats` may spend rolling up minutes before it reads (the rest is read from calls)
ROLLUP_BUDGET = 5.0


def open_transport_or_none(env: Env):
    """The broker for queue depths, or None (with a note on stderr) when it is unreachable."""
    try:
        return env.transport
    except EcError as exc:
        click.echo(f"ec: queue depths unknown: {exc}", err=True)
        return None


def roll_up(env: Env) -> None:
    """Bring the per-minute history up to date (as the agent does every minute); a store
    that refuses the writes (a read-only role, say) only makes the reading slower."""
    from peewee import DatabaseError

    from .. import metrics

    try:
        metrics.maintain(env.config.stats_retention, budget=ROLLUP_BUDGET)
    except DatabaseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"ec: stats history not updated: {first}", err=True)


@click.command()
@click.argument("socket", required=False)
@click.option("--since", default="1h", show_default=True, help="Window: 30s, 10m, 2h, 1d.")
@click.option("--workers", is_flag=True, help="List workers (cpu, memory, calls) instead of sockets.")
@click.option("--per-minute", "per_minute", is_flag=True,
              help="A row per socket and minute with calls (with --json: a 'minutes' list in each socket).")
@click.option("--schedules", "schedules", is_flag=True,
              help="List schedules (next tick, how late, ticks fired and missed, failed calls) instead of sockets.")
@click.option("--json", "as_json", is_flag=True,
              help="Everything (sockets, calls, workers, hosts, schedules) as one JSON object.")
@pass_env
def stats(env: Env, socket, since, workers, per_minute, schedules, as_json) -> None:
    """Calls in and out per minute, latency p50/p95/p99, queue wait, failure rate, queue
    depth and in-flight calls per socket (or SOCKET), from the store: whole minutes from
    its per-minute history (kept stats_retention, default 30d), the rest from the calls."""
    from .. import metrics
    from ..calls import parse_since
    from ..store.models import Call, MinuteStat, Socket

    env.store()
    start = parse_since(since)
    if socket and Socket.get_or_none(Socket.name == socket) is None \
            and Call.get_or_none(Call.socket == socket) is None \
            and MinuteStat.get_or_none(MinuteStat.socket == socket) is None:
        raise NotFound(f"unknown socket {socket!r} (see 'ec ls sockets')")
    if workers and not as_json:
        render(metrics.worker_stats(start), WORKER_COLUMNS)
        return
    if schedules and not as_json:
        from .. import schedules as schedules_lib

        render(schedules_lib.summary(), SCHEDULE_COLUMNS, title="schedules")
        return
    roll_up(env)
    if per_minute and not as_json:
        series = metrics.minute_series(start, socket=socket)
        rows = [{"socket": name, **entry} for name, entries in series.items() for entry in entries]
        rows.sort(key=lambda r: (r["minute"], r["socket"]))
        render(rows, MINUTE_COLUMNS, title=f"calls per minute over the last {since}")
        return
    transport = open_transport_or_none(env)
    if as_json:
        from .. import schedules as schedules_lib

        out = metrics.stats(start, socket=socket, transport=transport, namespace=env.config.namespace,
                            minutes=per_minute)
        out["schedules"] = schedules_lib.summary()
        click.echo(dumps(out))
        return
    rows = metrics.socket_stats(start, socket=socket, transport=transport, namespace=env.config.namespace)
    render(rows, COLUMNS, title=f"calls over the last {since}")
