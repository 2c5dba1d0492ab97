"""Celery on the same RabbitMQ, configured for durability like ElasticCode: persistent
messages on a durable (quorum by default) queue, ``acks_late=True``,
``task_reject_on_worker_lost=True``, prefork concurrency 2, ``rpc://`` results.

    python -m bench celery [--calls 10000] [--seq 1000] [--chords 20] [--members 100]
                           [--chains 20] [--steps 10] [--concurrency 2]
                           [--queue-type quorum|classic] [--confirms both|off|on]

Workloads:
  * throughput: send CALLS no-op tasks, then collect every result (``ResultSet.get``);
  * sequential: SEQ round trips ``noop.delay().get()``, p50/p99;
    both measured without publisher confirms (Celery's default, what users get) and with
    them (``broker_transport_options={"confirm_publish": True}``: ElasticCode's guarantee);
  * loop: ``[add_two.delay(i, 1) for i in range(LOOP)]`` then ``[r.get() for r in ...]``;
  * chain: ``chain(emit_one.s(), add_two.s(1) x (STEPS-1))`` end to end, CHAINS times;
  * chord: ``chord([emit_one.s()] * MEMBERS)(total.s())``, CHORDS times. ``rpc://``
    cannot run chords, so the worker is restarted with the SQLAlchemy result backend on
    PostgreSQL (a fresh schema), where Celery polls the chord's completion with
    ``chord_unlock`` (``result_chord_retry_interval``, 1 s by default, left as it is).
The worker runs as a subprocess on a queue named for this run; it is stopped by pid (with
its children) and the queue deleted in every case. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    AMQP,
    PG,
    ROOT,
    drop_schema,
    emit,
    latency_summary,
    machine,
    pg_schema,
    rss_mb,
    table,
)
from helpers import stop_tree  # noqa: E402


def backend_url(schema: str | None) -> str:
    if schema is None:
        return "rpc://"
    url = PG.split("://", 1)[1]
    return f"db+postgresql+psycopg2://{url}"  # SQLAlchemy 2.1 would pick psycopg 3


@contextmanager
def celery_worker(queue: str, queue_type: str, concurrency: int, schema: str | None, log: Path):
    """``celery worker -P prefork -c N`` in a subprocess, stopped by pid in every case."""
    env = dict(os.environ, BENCH_CELERY_BROKER=AMQP, BENCH_CELERY_BACKEND=backend_url(schema),
               BENCH_CELERY_QUEUE=queue, BENCH_CELERY_QUEUE_TYPE=queue_type, BENCH_CELERY_CONFIRM="0",
               BENCH_CELERY_SCHEMA=schema or "",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    argv = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-P", "prefork",
            "-c", str(concurrency), "-Q", queue, "-n", f"{queue}@%h", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=err, stderr=err)
    try:
        yield proc
    finally:
        stop_tree(proc, grace=10)


def delete_queue(queue: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    try:
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(queue)
    finally:
        conn.close()


def warm_up(app, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Wait until the worker answers (its pool processes started)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            for r in [app.send_task("bench.noop") for _ in range(20)]:
                r.get(timeout=5)
            return
        except Exception as exc:  # noqa: BLE001 - celery's TimeoutError and connection errors
            if time.monotonic() > deadline:
                raise RuntimeError(f"celery worker not answering ({exc!r}):\n{log.read_text()[-3000:]}") from None


def throughput(app, calls: int) -> dict:
    from celery.result import ResultSet

    t0 = time.perf_counter()
    results = [app.send_task("bench.noop") for _ in range(calls)]
    t_sub = time.perf_counter() - t0
    values = ResultSet(results, app=app).get(timeout=600)
    total = time.perf_counter() - t0
    assert len(values) == calls
    return {"throughput_calls_s": round(calls / total, 1), "submit_calls_s": round(calls / t_sub, 1),
            "throughput_s": round(total, 3)}


def sequential(app, n: int) -> dict:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        app.send_task("bench.noop").get(timeout=30)
        lat.append(time.perf_counter() - t)
    return latency_summary(lat, "seq")


def loop(app, n: int) -> dict:
    """The ``.delay()`` loop a user writes, then each result in turn."""
    add_two = app.tasks["bench.add_two"]
    t0 = time.perf_counter()
    results = [add_two.delay(i, 1) for i in range(n)]
    values = [r.get(timeout=600) for r in results]
    total = time.perf_counter() - t0
    assert values == [i + 1 for i in range(n)], "loop: wrong results"
    return {"loop_calls_s": round(n / total, 1)}


def chains(app, n: int, steps: int) -> dict:
    from celery import chain

    lat = []
    for _ in range(n):
        t = time.perf_counter()
        sig = chain(app.signature("bench.emit_one"),
                    *[app.signature("bench.add_two", args=(1,)) for _ in range(steps - 1)])
        value = sig.apply_async().get(timeout=60)
        lat.append(time.perf_counter() - t)
        assert value == steps, value
    return latency_summary(lat, "chain")


def chords(app, n: int, members: int) -> dict:
    from celery import chord

    lat = []
    for _ in range(n):
        t = time.perf_counter()
        res = chord([app.signature("bench.emit_one") for _ in range(members)], app=app)(
            app.signature("bench.total"))
        value = res.get(timeout=120)
        lat.append(time.perf_counter() - t)
        assert value == members, value
    return latency_summary(lat, "chord")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench celery", description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--seq", type=int, default=1000)
    ap.add_argument("--loop", type=int, default=2000)
    ap.add_argument("--chords", type=int, default=20)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--chains", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
    ap.add_argument("--confirms", choices=["both", "off", "on"], default="both")
    args = ap.parse_args(argv)

    from bench.celery_app import make_app

    run = uuid.uuid4().hex[:8]
    queue = f"bench.celery.{run}"
    variants = {"both": ["default", "confirms"], "off": ["default"], "on": ["confirms"]}[args.confirms]
    results: dict[str, dict] = {v: {} for v in variants}
    extra: dict = {}
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "worker.log"
        try:
            # phase 1: rpc:// results (throughput, round trips, chains)
            apps = {v: make_app(queue=queue, queue_type=args.queue_type, confirm=v == "confirms")
                    for v in variants}
            with celery_worker(queue, args.queue_type, args.concurrency, None, log) as proc:
                print(f"[celery] worker pid {proc.pid} on {queue}", file=sys.stderr, flush=True)
                warm_up(apps[variants[0]], proc, log)
                import psutil

                pool = [p.pid for p in psutil.Process(proc.pid).children()]
                extra["worker_rss_mb_start"] = rss_mb([proc.pid, *pool])
                for v in variants:
                    if args.calls:
                        results[v] |= throughput(apps[v], args.calls)
                    if args.seq:
                        results[v] |= sequential(apps[v], args.seq)
                    if args.loop:
                        results[v] |= loop(apps[v], args.loop)
                    print(f"[celery] {v}: {results[v]}", file=sys.stderr, flush=True)
                if args.chains:
                    extra |= chains(apps[variants[0]], args.chains, args.steps)
                extra["worker_rss_mb_end"] = rss_mb([proc.pid, *pool])
            for a in apps.values():
                a.close()
            # phase 2: the chord needs a result backend that can join: PostgreSQL
            if args.chords:
                schema = pg_schema("celery_bench")
                try:
                    app = make_app(backend=backend_url(schema), queue=queue, queue_type=args.queue_type,
                                   schema=schema)
                    with celery_worker(queue, args.queue_type, args.concurrency, schema, log) as proc:
                        warm_up(app, proc, log)
                        chords(app, 1, args.members)  # result tables created, chord path warm
                        extra |= chords(app, args.chords, args.members)
                    app.close()
                finally:
                    drop_schema(schema)
            print(f"[celery] chain/chord: {extra}", file=sys.stderr, flush=True)
        finally:
            delete_queue(queue)

    import celery

    print(f"Celery {celery.__version__}: prefork -c {args.concurrency}, acks_late, reject_on_worker_lost, "
          f"{args.queue_type} queue, rpc:// (chord: PostgreSQL backend), {os.cpu_count()} CPUs")
    rows = [[f"throughput calls/s ({v})", r.get("throughput_calls_s")] for v, r in results.items()]
    rows += [[f"sequential p50 ms ({v})", r.get("seq_p50_ms")] for v, r in results.items()]
    rows += [[f"sequential p99 ms ({v})", r.get("seq_p99_ms")] for v, r in results.items()]
    rows += [[f"loop calls/s ({v})", r.get("loop_calls_s")] for v, r in results.items()]
    rows += [[f"chain {args.steps} p50 ms", extra.get("chain_p50_ms")],
             [f"chord {args.members}+sum p50 ms", extra.get("chord_p50_ms")]]
    print(table(["workload", "value"], rows))
    emit({"bench": "celery", "celery": celery.__version__, "concurrency": args.concurrency,
          "queue_type": args.queue_type, "calls": args.calls, "seq": args.seq, "loop": args.loop, "chords": args.chords,
          "members": args.members, "chains": args.chains, "steps": args.steps, **machine(),
          **results, **extra})


if __name__ == "__main__":
    main()
