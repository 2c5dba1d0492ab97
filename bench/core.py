"""Benchmark the durable core: no-op calls through real worker processes.

    python -m bench core [--calls 10000] [--seq 1000] [--workers 2] [--prefetch 32]
                         [--only embedded|distributed]
    (or: python bench/core.py ...)

For each backend pair (embedded: SQLite store + SQLite queue; distributed: PostgreSQL +
RabbitMQ) it starts `ec worker -c WORKERS --prefetch PREFETCH`, then measures
  * throughput: submit CALLS no-op calls in one batch, then collect every outcome;
  * sequential round trips: SEQ calls one after another, p50/p99 latency.
Prints a table and one JSON line. Services: RabbitMQ and PostgreSQL on localhost.
``python -m bench ec`` adds the workflow workloads (funnel, pipeline) on the same setup.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    AMQP,
    PG,
    PREFETCH,
    drop_schema,
    emit,
    latency_summary,
    machine,
    pg_schema,
    table,
)
from helpers import build_network, env_for, make_repo, wait_children, workers  # noqa: E402

#: socket name -> (sample function, options); the bench starts its own workers (--workers, --prefetch)
SOCKETS = {
    "noop": ("noop", {"concurrency": 8}),
    "emit_one": ("emit_one", {"concurrency": 8}),
    "add_two": ("add_two", {"concurrency": 8}),
    "total": ("total", {"concurrency": 8}),
}
ENV_KEYS = ("EC_DB", "EC_BROKER", "EC_NAMESPACE")


@dataclass
class Session:
    """A running network: the in-process client (``ectool.api.client()``), the worker
    processes (psutil) and the environment of ``ec`` subprocesses."""

    client: object
    workers: list
    env: dict
    backend: str


def backend_urls(name: str, tmp: Path, schema: str | None = None) -> tuple[str, str]:
    if name == "embedded":
        return f"sqlite:///{tmp / 'ec.db'}", f"sqlite:///{tmp / 'queue.db'}"
    return f"{PG}?schema={schema}", AMQP


@contextmanager
def ec_session(db_url: str, broker_url: str, nworkers: int, prefetch: int, tmp: Path):
    """Register the sample processor and the bench sockets, start ``ec worker -c N``,
    point this process's API client at the same store, transport and namespace."""
    from ectool import api

    repo = make_repo(tmp / f"repo-{uuid.uuid4().hex[:6]}")
    proc = f"bench-{uuid.uuid4().hex[:6]}"
    build_network(db_url, repo, processor=proc, sockets=SOCKETS)
    env = env_for(db_url, broker_url)
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update({k: env[k] for k in ENV_KEYS})
    api.close()
    try:
        client = api.client()
        with workers(env, proc, nworkers, "--prefetch", str(prefetch)) as w:
            kids = wait_children(w, nworkers)
            # warm up: queues declared, workers consuming. Twice, a second apart: a client
            # that published before the workers registered caches "no consumers to wake"
            # for up to a second on the embedded transport (the workers then poll, 1 s)
            for _ in range(2):
                for name in SOCKETS:
                    client.call(name, [1, 1] if name == "add_two" else [[1]] if name == "total" else [],
                                timeout=60)
                time.sleep(1.2)
            yield Session(client, kids, env, "amqp" if broker_url.startswith("amqp") else "sqlite")
    finally:
        api.close()
        if broker_url.startswith("amqp"):
            from ectool.calls import broker_queue
            from ectool.transport import connect

            with connect(broker_url) as t:
                for name in SOCKETS:
                    t.delete_queue(broker_queue(name, env["EC_NAMESPACE"]))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def throughput(client, calls: int, socket: str = "noop") -> dict:
    """Submit ``calls`` no-op calls in one batch, then collect every outcome."""
    t0 = time.perf_counter()
    ids = client.submit(socket, [([], {})] * calls)
    t_sub = time.perf_counter() - t0
    done = client.wait(ids, timeout=600)
    total = time.perf_counter() - t0
    assert len(done) == calls and all(o.ok for o in done.values()), "throughput: calls failed"
    return {"throughput_calls_s": round(calls / total, 1), "submit_calls_s": round(calls / t_sub, 1),
            "throughput_s": round(total, 3)}


def sequential(client, n: int, socket: str = "noop") -> dict:
    """``n`` round trips one after another (submit, wait for the outcome)."""
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        out = client.call(socket, [], timeout=60)
        lat.append(time.perf_counter() - t)
        assert out.ok, out
    return latency_summary(lat, "seq")


def with_backends(only: str | None, tmp: Path, fn) -> dict:
    """``fn(name, db_url, broker_url)`` for each backend pair; a PostgreSQL schema per run."""
    results = {}
    if only in (None, "embedded"):
        results["embedded"] = fn("embedded", *backend_urls("embedded", tmp))
    if only in (None, "distributed"):
        schema = pg_schema()
        try:
            results["distributed"] = fn("distributed", *backend_urls("distributed", tmp, schema))
        finally:
            drop_schema(schema)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench core", description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--seq", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=PREFETCH)
    ap.add_argument("--only", choices=["embedded", "distributed"])
    args = ap.parse_args(argv)

    def one(_name: str, db_url: str, broker_url: str) -> dict:
        with ec_session(db_url, broker_url, args.workers, args.prefetch, tmp) as s:
            return {**throughput(s.client, args.calls), **sequential(s.client, args.seq)}

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EC_HOME"] = str(tmp / "home")
        results = with_backends(args.only, tmp, one)
    print(f"ec core: {args.workers} workers, prefetch {args.prefetch}, {args.calls} calls, {args.seq} sequential")
    print(table(["backend", "calls/s", "submit/s", "p50 ms", "p99 ms"],
                [[n, r["throughput_calls_s"], r["submit_calls_s"], r["seq_p50_ms"], r["seq_p99_ms"]]
                 for n, r in results.items()]))
    emit({"bench": "core", "calls": args.calls, "seq": args.seq, "workers": args.workers,
          "prefetch": args.prefetch, **machine(), **results})


if __name__ == "__main__":
    main()
