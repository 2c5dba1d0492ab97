"""ElasticCode's side of the comparison: the same workloads as ``bench celery``, through
real ``ec worker`` processes, on RabbitMQ + PostgreSQL ("distributed") and on the embedded
SQLite default ("embedded").

    python -m bench ec [--calls 10000] [--seq 1000] [--loop 2000] [--funnels 20] [--members 100]
                       [--pipelines 20] [--steps 10] [--workers 2] [--prefetch 32]
                       [--only embedded|distributed]

Workloads (2 worker processes by default, each holding PREFETCH deliveries ahead):
  * throughput: submit CALLS no-op calls in one batch, then collect every outcome;
  * sequential: SEQ no-op round trips one after another, p50/p99;
  * loop: the Python user's loop, ``[add_two(i, 1) for i in range(LOOP)]`` then
    ``[h.get() for h in handles]`` (pipelined submits, :mod:`ectool.submitter`);
  * funnel: ``funnel([emit_one.p() for _ in range(MEMBERS)])(total.p())`` (a chord of
    MEMBERS then a sum; the members return 1 so that the sum is checkable: ``noop``
    returns None, which ``total`` cannot add), FUNNELS times one after another;
  * pipeline: ``pipeline([emit_one.p()] + [add_two.p(1)] * (STEPS - 1))``, end to end,
    PIPELINES times (result STEPS).
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PREFETCH, emit, latency_summary, machine, rss_mb, table  # noqa: E402
from bench.core import ec_session, sequential, throughput, with_backends  # noqa: E402


def recorded(call_id: str) -> float:
    """Seconds from the workflow's start to its outcome, as the store recorded them (the
    root call's ``started`` and ``finished``): what the caller would see with no delay in
    being told."""
    from ectool.store.models import Call

    row = Call.get_by_id(call_id)
    return (row.finished - row.started).total_seconds()


def funnels(n: int, members: int) -> dict:
    from ectool.api import Socket, funnel

    emit_one, total = Socket(name="emit_one"), Socket(name="total")
    lat, stored = [], []
    for _ in range(n):
        t = time.perf_counter()
        handle = funnel([emit_one.p() for _ in range(members)])(total.p())
        value = handle.get(timeout=300)
        lat.append(time.perf_counter() - t)
        assert value == members, value
        stored.append(recorded(handle.id))
    return latency_summary(lat, "funnel") | latency_summary(stored, "funnel_stored")


def pipelines(n: int, steps: int) -> dict:
    from ectool.api import Socket, pipeline

    emit_one, add_two = Socket(name="emit_one"), Socket(name="add_two")
    lat, stored = [], []
    for _ in range(n):
        t = time.perf_counter()
        handle = pipeline([emit_one.p()] + [add_two.p(1) for _ in range(steps - 1)]).delay()
        value = handle.get(timeout=120)
        lat.append(time.perf_counter() - t)
        assert value == steps, value
        stored.append(recorded(handle.id))
    return latency_summary(lat, "pipeline") | latency_summary(stored, "pipeline_stored")


def loop(n: int) -> dict:
    """Per-call submits through ``Socket.__call__``, then collect each handle in turn."""
    from ectool.api import Socket

    add = Socket(name="add_two")
    t0 = time.perf_counter()
    handles = [add(i, 1) for i in range(n)]
    t_sub = time.perf_counter() - t0
    values = [h.get(timeout=600) for h in handles]
    total = time.perf_counter() - t0
    assert values == [i + 1 for i in range(n)], "loop: wrong results"
    return {"loop_calls_s": round(n / total, 1), "loop_submit_calls_s": round(n / t_sub, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench ec", description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--seq", type=int, default=1000)
    ap.add_argument("--loop", type=int, default=2000)
    ap.add_argument("--funnels", type=int, default=20)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--pipelines", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=PREFETCH)
    ap.add_argument("--only", choices=["embedded", "distributed"])
    args = ap.parse_args(argv)

    def one(name: str, db_url: str, broker_url: str) -> dict:
        print(f"[ec] {name}: starting {args.workers} workers", file=sys.stderr, flush=True)
        with ec_session(db_url, broker_url, args.workers, args.prefetch, tmp) as s:
            out = {"worker_rss_mb_start": rss_mb([w.pid for w in s.workers])}
            out |= throughput(s.client, args.calls) if args.calls else {}
            out |= sequential(s.client, args.seq) if args.seq else {}
            out |= loop(args.loop) if args.loop else {}
            out |= funnels(args.funnels, args.members) if args.funnels else {}
            out |= pipelines(args.pipelines, args.steps) if args.pipelines else {}
            out["worker_rss_mb_end"] = rss_mb([w.pid for w in s.workers])
            print(f"[ec] {name}: {out}", file=sys.stderr, flush=True)
            return out

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EC_HOME"] = str(tmp / "home")
        results = with_backends(args.only, tmp, one)

    print(f"ElasticCode, {args.workers} worker processes, prefetch {args.prefetch}, {os.cpu_count()} CPUs")
    rows = [
        ("throughput calls/s", "throughput_calls_s", f"{args.calls} no-op, submit all then collect all"),
        ("submit phase calls/s", "submit_calls_s", "durable: stored + publisher-confirmed"),
        ("sequential p50 ms", "seq_p50_ms", f"{args.seq} round trips"),
        ("loop calls/s", "loop_calls_s", f"{args.loop} x add(i, 1), then each h.get()"),
        ("  loop submits calls/s", "loop_submit_calls_s", "until the last handle returned"),
        ("sequential p99 ms", "seq_p99_ms", ""),
        (f"funnel {args.members}+sum p50 ms", "funnel_p50_ms", f"{args.funnels} funnels, one at a time"),
        ("  store: start->outcome p50 ms", "funnel_stored_p50_ms", "root call's started..finished"),
        (f"pipeline {args.steps} p50 ms", "pipeline_p50_ms", f"{args.pipelines} pipelines, end to end"),
        (f"pipeline {args.steps} p99 ms", "pipeline_p99_ms", ""),
        ("  store: start->outcome p50 ms", "pipeline_stored_p50_ms", "root call's started..finished"),
    ]
    names = list(results)
    print(table(["workload", *names, "note"],
                [[label, *(results[n].get(key) for n in names), note] for label, key, note in rows]))
    emit({"bench": "ec", "workers": args.workers, "prefetch": args.prefetch, "calls": args.calls,
          "seq": args.seq, "loop": args.loop, "funnels": args.funnels, "members": args.members,
          "pipelines": args.pipelines, "steps": args.steps, **machine(), **results})


if __name__ == "__main__":
    main()
