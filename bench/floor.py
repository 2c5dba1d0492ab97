"""The floor: what ElasticCode's guarantees cost on this machine with no ElasticCode
runtime around them, so ec's figures can be told apart into "the guarantees" and "ec".

The ceiling (``bench ceiling``) has no store; Celery's ``rpc://`` has none either. ec
writes three things per call that they do not, each a promise in DESIGN.md: the call's row
before the caller is told it was sent, the claim that marks it running (so a cancelled or
finished call is never run, and a worker that dies running it is counted), and the
outcome before the ack. This bench does exactly that and nothing more, from raw pika and
psycopg2 in single-threaded loops:

* ec's own PostgreSQL schema (a fresh one) and ec's own statements (``insert_calls``,
  ``claim_calls`` with its asynchronous commit, ``record_outcomes``);
* ec's RabbitMQ topology: a quorum work queue, persistent messages with pipelined
  publisher confirms, manual acks; replies non-persistent to the caller's exclusive inbox,
  packed per batch; 2 server processes, each taking what its prefetch buffered as a batch;
* throughput: submit CALLS (rows inserted, then published and confirmed) then collect
  every reply; sequential: SEQ round trips one after another, p50/p99.

Usage: ``python -m bench floor [--calls 10000] [--seq 1000] [--prefetch 32]``.
Prints a small table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ceiling import Producer  # noqa: E402
from bench.common import (  # noqa: E402
    AMQP,
    PG,
    PREFETCH,
    drop_schema,
    emit,
    latency_summary,
    machine,
    pg_schema,
    request_reply,
    table,
)

SERVERS = 2


# -- the server processes -------------------------------------------------------------------


def serve(amqp: str, db_url: str, queue: str, prefetch: int, ready) -> None:
    """Claim each batch, "run" it (no-op), record its outcomes, reply, then ack it."""
    import pika
    from pika.adapters.blocking_connection import BlockingConnection
    from pika.spec import BasicProperties

    from ectool.store import open_store
    from ectool.store.ledger import claim_calls, record_outcomes
    from ectool.transport.base import pack_replies

    open_store(db_url)
    conn = BlockingConnection(pika.URLParameters(amqp))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=prefetch)
    buffered: list[tuple[int, bytes]] = []
    channel.basic_consume(queue, lambda _c, method, _p, body: buffered.append((method.delivery_tag, body)))
    transient = BasicProperties(delivery_mode=1)
    pid = os.getpid()
    ready.set()
    while True:
        conn.process_data_events(time_limit=1)
        if not buffered:
            continue
        batch, buffered[:] = list(buffered), []
        calls = [json.loads(body) for _, body in batch]
        claim_calls([c["id"] for c in calls], "floor", pid)
        record_outcomes([SimpleNamespace(msg=SimpleNamespace(id=c["id"]), status="done", result_json="null",
                                         error_type=None, error_message=None, traceback=None, log=None,
                                         started=None, finished=None)
                         for c in calls])
        replies = [(c["reply_to"], json.dumps({"id": c["id"], "status": "done", "result": "null"}).encode())
                   for c in calls]
        for address, body in pack_replies(replies, 256 * 1024):
            channel.basic_publish("", address, body, transient)
        channel.basic_ack(batch[-1][0], multiple=True)


# -- the client -----------------------------------------------------------------------------


class Client(Producer):
    """The ceiling's producer (pipelined confirms, replies on the same connection) that
    stores each call's row before publishing it, as ec's client does."""

    def __init__(self, amqp: str, queue: str):
        from ectool.messages import CallEncoder

        super().__init__(amqp, queue, None)
        self.encoder = CallEncoder("noop", "noop", reply_to=self.inbox)

    def submit(self, n: int) -> None:
        """``n`` calls: rows committed, then messages published and confirmed."""
        from ectool.messages import new_id
        from ectool.store.ledger import insert_calls
        from ectool.store.models import now

        stamp = now()
        bodies, rows = [], []
        for _ in range(n):
            cid = new_id()
            body, args = self.encoder.encode(cid, cid, [], {})
            bodies.append(body)
            rows.append((cid, stamp, stamp, "noop", None, cid, None, "queued", 0, args, stamp))
        insert_calls(rows)
        self.publish(bodies)


def floor(calls: int, seq: int, prefetch: int) -> dict:
    import pika
    from pika.adapters.blocking_connection import BlockingConnection

    from ectool.store import open_store
    from ectool.store.models import db

    schema = pg_schema("ec_floor")
    db_url = f"{PG}?schema={schema}"
    queue = f"ec.bench.floor.{uuid.uuid4().hex[:8]}"
    admin = BlockingConnection(pika.URLParameters(AMQP))
    channel = admin.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    spawn = multiprocessing.get_context("spawn")  # each server opens its own connections
    ready = [spawn.Event() for _ in range(SERVERS)]
    servers = [spawn.Process(target=serve, args=(AMQP, db_url, queue, prefetch, r), daemon=True) for r in ready]
    try:
        open_store(db_url)  # ec's schema
        for server in servers:
            server.start()
        for r in ready:
            if not r.wait(60):
                raise RuntimeError("a floor server did not start")
        client = Client(AMQP, queue)
        submitting, total, latencies = request_reply(client.submit, client.collect, calls, seq)
        client.conn.close()
        return {"servers": SERVERS, "prefetch": prefetch, "calls": calls,
                "throughput_calls_s": round(calls / total, 1), "submit_calls_s": round(calls / submitting, 1),
                "seq": seq, **latency_summary(latencies, "seq")}
    finally:
        for server in servers:
            if server.pid is not None:
                server.terminate()
                server.join(5)
        channel.queue_delete(queue)
        admin.close()
        db.close()
        drop_schema(schema)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench floor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--seq", type=int, default=1000)
    ap.add_argument("--prefetch", type=int, default=PREFETCH)
    args = ap.parse_args(argv)
    result = floor(args.calls, args.seq, args.prefetch)
    print(f"The floor: ec's store writes and RabbitMQ topology from raw pika + psycopg2, {SERVERS} servers, "
          f"prefetch {args.prefetch}, {os.cpu_count()} CPUs")
    print(table(["workload", "figure"],
                [[f"throughput calls/s ({args.calls})", result["throughput_calls_s"]],
                 ["submit phase calls/s", result["submit_calls_s"]],
                 [f"sequential p50 ms ({args.seq})", result["seq_p50_ms"]],
                 ["sequential p99 ms", result["seq_p99_ms"]]]))
    emit({"bench": "floor", **machine(), **result})


if __name__ == "__main__":
    main()
