"""Where a round trip and a funnel spend their time, from the caller's clock and the
timestamps the store records (one host, one clock).

    python -m bench phases [--seq 300] [--funnels 10] [--members 100] [--workers 1]
                           [--prefetch 32] [--only embedded|distributed]

A sequential no-op call is cut into: submit (row stored, message confirmed), queued
(until a worker marked it running: delivery and claim), running (until its outcome was
stored: the call, and recording it), reply (until the caller had the outcome). A funnel
of MEMBERS no-ops then a sum is cut at: submitted, the first and last member started,
the last member finished, the join closed, the final step started and finished, the
workflow finished, the caller told. A pipeline of STEPS no-ops is cut at: submitted,
the first step started, then per step: running (started..finished) and between steps
(one step finished..the next started: the hand-off, or a trip through the broker), then
the workflow finished and the caller told (per-step stretches: medians over every step).
Medians of each stretch; a table and one JSON line.
Use it to see which stage a change moved, then ``bench compare`` for figures to quote.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PREFETCH, emit, machine, table  # noqa: E402
from bench.core import ec_session, with_backends  # noqa: E402


def stamp(value: dt.datetime) -> float:
    """A store timestamp (naive UTC) as epoch seconds."""
    return value.replace(tzinfo=dt.UTC).timestamp()


def cut(marks: list[tuple[str, float]], cuts: dict[str, list[float]]) -> None:
    """File the stretches between consecutive (name, time) marks under the earlier name,
    and the whole under ``total``."""
    for (name, a), (_, b) in pairwise(marks):
        cuts.setdefault(name, []).append(b - a)
    cuts.setdefault("total", []).append(marks[-1][1] - marks[0][1])


def medians(stretches: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(v) * 1000, 3) for name, v in stretches.items() if v}


def sequential(client, n: int) -> dict[str, float]:
    from ectool.store.models import Call

    cuts: dict[str, list[float]] = {}
    for _ in range(n):
        t0 = time.time()
        cid = client.submit("noop", [([], {})])[0]
        t1 = time.time()
        assert client.wait([cid], timeout=60)[cid].ok
        t2 = time.time()
        row = Call.get_by_id(cid)
        cut([("submit", t0), ("queued", t1), ("running", stamp(row.started)),
             ("reply", stamp(row.finished)), ("", t2)], cuts)
    return medians(cuts)


def funnels(n: int, members: int) -> dict[str, float]:
    from ectool.api import Socket, funnel
    from ectool.store.models import Call
    from ectool.workflow import node_id

    emit_one, total = Socket(name="emit_one"), Socket(name="total")
    cuts: dict[str, list[float]] = {}
    for _ in range(n):
        t0 = time.time()
        handle = funnel([emit_one.p() for _ in range(members)])(total.p())
        t1 = time.time()
        assert handle.get(timeout=300) == members
        t2 = time.time()
        rows = {r.id: r for r in Call.select().where(Call.root == handle.id)}
        member_rows = [rows[node_id(handle.id, [0, i])] for i in range(members)]
        join, final, root = rows[node_id(handle.id, [0])], rows[node_id(handle.id, [1])], rows[handle.id]
        cut([("submit", t0),
                 ("to first member start", t1),
                 ("members starting", min(stamp(m.started) for m in member_rows)),
                 ("last member running", max(stamp(m.started) for m in member_rows)),
                 ("join", max(stamp(m.finished) for m in member_rows)),
                 ("to final start", stamp(join.finished)),
                 ("final running", stamp(final.started)),
                 ("to workflow done", stamp(final.finished)),
                 ("caller told", stamp(root.finished)),
                 ("", t2)], cuts)
    return medians(cuts)


def pipelines(n: int, steps: int) -> dict[str, float]:
    from ectool.api import Socket, pipeline
    from ectool.store.models import Call
    from ectool.workflow import node_id

    noop = Socket(name="noop")
    cuts: dict[str, list[float]] = {}
    for _ in range(n):
        t0 = time.time()
        handle = pipeline([noop.p() for _ in range(steps)]).delay()
        t1 = time.time()
        handle.get(timeout=300)
        t2 = time.time()
        rows = {r.id: r for r in Call.select().where(Call.root == handle.id)}
        step_rows = [rows[node_id(handle.id, [i])] for i in range(steps)]
        marks = [("submit", t0), ("to first step start", t1)]
        for i, row in enumerate(step_rows):
            marks += [("step running", stamp(row.started)),
                      ("between steps" if i < steps - 1 else "to workflow done", stamp(row.finished))]
        marks += [("caller told", stamp(rows[handle.id].finished)), ("", t2)]
        cut(marks, cuts)
    return medians(cuts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench phases", description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=300)
    ap.add_argument("--funnels", type=int, default=10)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--pipelines", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default 1: one path)")
    ap.add_argument("--prefetch", type=int, default=PREFETCH)
    ap.add_argument("--only", choices=["embedded", "distributed"])
    args = ap.parse_args(argv)

    def one(name: str, db_url: str, broker_url: str) -> dict:
        print(f"[phases] {name}: starting {args.workers} workers", file=sys.stderr, flush=True)
        with ec_session(db_url, broker_url, args.workers, args.prefetch, tmp) as s:
            return {"seq": sequential(s.client, args.seq) if args.seq else {},
                    "funnel": funnels(args.funnels, args.members) if args.funnels else {},
                    "pipeline": pipelines(args.pipelines, args.steps) if args.pipelines else {}}

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EC_HOME"] = str(tmp / "home")
        results = with_backends(args.only, tmp, one)

    names = list(results)
    print(f"where the time goes (medians, ms): {args.workers} worker(s), prefetch {args.prefetch}, "
          f"{os.cpu_count()} CPUs")
    for part, title in (("seq", f"sequential no-op call ({args.seq})"),
                        ("funnel", f"funnel of {args.members} then a sum ({args.funnels})"),
                        ("pipeline", f"pipeline of {args.steps} no-ops ({args.pipelines}; per step: medians "
                                     "over steps)")):
        keys = list(next(iter(results.values()))[part])
        if keys:
            print(f"\n{title}")
            print(table(["stretch", *names], [[k, *(results[n][part].get(k) for n in names)] for k in keys]))
    emit({"bench": "phases", "seq": args.seq, "funnels": args.funnels, "members": args.members,
          "pipelines": args.pipelines, "steps": args.steps,
          "workers": args.workers, "prefetch": args.prefetch, **machine(), **results})


if __name__ == "__main__":
    main()
