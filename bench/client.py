"""The client side alone: what ``Client.submit`` and ``Client.wait`` cost, without workers.

    python -m bench client [--calls 5000] [--seq 500] [--rounds 3]
                           [--only embedded|distributed]

No worker runs, so nothing competes with the client for the store or the broker and the
figures isolate the submit path (store row + publisher confirm) from the worker side:
  * submit one: SEQ single-call submits one after another (p50/p99): the client's part of
    a sequential round trip (row committed, message confirmed);
  * submit batch: CALLS calls in one ``submit`` (calls/s);
  * store poll: one ``outcomes()`` read of CALLS ids (what ``Client.wait`` pays each time
    it falls back to the store);
  * encode: ``CallMessage.encode`` of a no-op call, microseconds.
Each figure is the median over ROUNDS rounds. The queue is purged and deleted afterwards;
the PostgreSQL schema is dropped. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import drop_schema, emit, latency_summary, machine, pg_schema, table  # noqa: E402
from bench.core import backend_urls  # noqa: E402
from helpers import build_network, make_repo  # noqa: E402

SOCKETS = {"noop": ("noop", {"concurrency": 8})}


def one_backend(name: str, tmp: Path, args: argparse.Namespace) -> dict:
    from ectool.calls import Client, broker_queue, outcomes
    from ectool.config import load
    from ectool.messages import CallMessage

    schema = pg_schema() if name == "distributed" else None
    db_url, broker_url = backend_urls(name, tmp / name, schema)
    (tmp / name).mkdir(exist_ok=True)
    namespace = f"b{uuid.uuid4().hex[:10]}"
    saved = {k: os.environ.get(k) for k in ("EC_DB", "EC_BROKER", "EC_NAMESPACE", "EC_EVENTS")}
    os.environ.update(EC_DB=db_url, EC_BROKER=broker_url, EC_NAMESPACE=namespace)
    client = None
    try:
        build_network(db_url, make_repo(tmp / name / "repo"), processor=f"bench-{namespace}", sockets=SOCKETS)
        client = Client(load())
        client.submit("noop", [([], {})])  # warm: queue declared, grants cached, connections open
        rounds: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            lat = []
            for _ in range(args.seq):
                t = time.perf_counter()
                client.submit("noop", [([], {})])
                lat.append(time.perf_counter() - t)
            for k, v in latency_summary(lat, "submit_one").items():
                rounds.setdefault(k, []).append(v)
            t = time.perf_counter()
            ids = client.submit("noop", [([], {})] * args.calls)
            rounds.setdefault("submit_batch_calls_s", []).append(args.calls / (time.perf_counter() - t))
            t = time.perf_counter()
            outcomes(ids)
            rounds.setdefault("store_poll_ms", []).append((time.perf_counter() - t) * 1000)
            msg = CallMessage(id=str(uuid.uuid4()), socket="noop", task="noop", root="r", reply_to="amq.x")
            n = 20_000
            t = time.perf_counter()
            for _ in range(n):
                msg.encode(1 << 20)
            rounds.setdefault("encode_us", []).append((time.perf_counter() - t) / n * 1e6)
            client.transport.purge(broker_queue("noop", namespace))
        return {k: round(statistics.median(v), 3) for k, v in rounds.items()}
    finally:
        if client is not None:
            try:
                client.transport.delete_queue(broker_queue("noop", namespace))
            finally:
                client.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if schema:
            drop_schema(schema)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench client", description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--seq", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["embedded", "distributed"])
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EC_HOME"] = str(tmp / "home")
        for name in ("embedded", "distributed"):
            if args.only in (None, name):
                results[name] = one_backend(name, tmp, args)
    names = list(results)
    rows = [("submit one p50 ms", "submit_one_p50_ms", f"{args.seq} single-call submits, no worker"),
            ("submit one p99 ms", "submit_one_p99_ms", ""),
            ("submit batch calls/s", "submit_batch_calls_s", f"{args.calls} calls in one submit"),
            ("store poll ms", "store_poll_ms", f"outcomes() of {args.calls} ids"),
            ("encode us", "encode_us", "CallMessage.encode, no-op call")]
    print(f"ec client alone (no workers), median of {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(table(["what", *names, "note"], [[label, *(results[n].get(key) for n in names), note]
                                           for label, key, note in rows]))
    emit({"bench": "client", "calls": args.calls, "seq": args.seq, "rounds": args.rounds, **machine(), **results})


if __name__ == "__main__":
    main()
