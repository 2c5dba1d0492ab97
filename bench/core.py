"""Benchmark the durable core: no-op calls through real worker processes.

    python bench/core.py [--calls 10000] [--seq 1000] [--workers 2] [--only embedded|distributed]

For each backend pair (embedded: SQLite store + SQLite queue; distributed: PostgreSQL +
RabbitMQ) it starts `ec worker -c WORKERS`, then measures
  * throughput: submit CALLS no-op calls in one batch, then collect every outcome;
  * sequential round trips: CALLS one after another, p50/p99 latency.
Prints a table and one JSON line. Services: RabbitMQ and PostgreSQL on localhost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import build_network, env_for, make_repo, wait_children, workers  # noqa: E402

PG = os.environ.get("EC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PREFETCH = int(os.environ.get("EC_BENCH_PREFETCH", "32"))
AMQP = os.environ.get("EC_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


def pg_schema() -> str:
    import psycopg2

    schema = f"ec_bench_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(PG)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE SCHEMA {schema}")
    conn.close()
    return schema


def drop_schema(schema: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG)
    conn.autocommit = True
    conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


def measure(db_url: str, broker_url: str, calls: int, seq: int, nworkers: int, tmp: Path) -> dict:
    from ectool.calls import Client
    from ectool.config import load

    repo = make_repo(tmp / f"repo-{uuid.uuid4().hex[:6]}")
    proc = f"bench-{uuid.uuid4().hex[:6]}"
    build_network(db_url, repo, processor=proc, sockets={f"noop-{proc}": ("noop", {"concurrency": 8})})
    sock = f"noop-{proc}"
    env = env_for(db_url, broker_url)
    os.environ.update(EC_DB=db_url, EC_BROKER=broker_url)
    client = Client(load())
    out = {}
    try:
        with workers(env, proc, nworkers, "--prefetch", str(PREFETCH)) as w:
            wait_children(w, nworkers)
            client.call(sock, [], timeout=60)  # warm up: queue declared, workers consuming
            t0 = time.perf_counter()
            ids = client.submit(sock, [([], {})] * calls)
            t_sub = time.perf_counter() - t0
            done = client.wait(ids, timeout=600)
            total = time.perf_counter() - t0
            assert len(done) == calls and all(o.ok for o in done.values())
            out["throughput_calls_s"] = round(calls / total, 1)
            out["submit_calls_s"] = round(calls / t_sub, 1)
            lat = []
            for _ in range(seq):
                t = time.perf_counter()
                client.call(sock, [], timeout=60)
                lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            out["seq_p50_ms"] = round(statistics.median(lat), 2)
            out["seq_p99_ms"] = round(lat[int(len(lat) * 0.99) - 1], 2)
    finally:
        client.close()
        if broker_url.startswith("amqp"):
            from ectool.calls import broker_queue
            from ectool.transport import connect

            with connect(broker_url) as t:
                t.delete_queue(broker_queue(sock, os.environ.get("EC_NAMESPACE", "")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--seq", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=["embedded", "distributed"])
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EC_HOME"] = str(tmp / "home")
        if args.only in (None, "embedded"):
            results["embedded"] = measure(f"sqlite:///{tmp / 'ec.db'}", f"sqlite:///{tmp / 'queue.db'}",
                                          args.calls, args.seq, args.workers, tmp)
        if args.only in (None, "distributed"):
            schema = pg_schema()
            try:
                results["distributed"] = measure(f"{PG}?schema={schema}", AMQP, args.calls, args.seq,
                                                 args.workers, tmp)
            finally:
                drop_schema(schema)
    print(f"{'backend':<12} {'calls/s':>9} {'submit/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in results.items():
        print(f"{name:<12} {r['throughput_calls_s']:>9} {r['submit_calls_s']:>9} {r['seq_p50_ms']:>8} {r['seq_p99_ms']:>8}")
    print(json.dumps({"bench": "core", "calls": args.calls, "workers": args.workers, **results}))


if __name__ == "__main__":
    main()
