"""The ceiling: what raw pika on RabbitMQ does on this machine, with the same durability
as ElasticCode (persistent messages, publisher confirms, manual acks), so ec's own numbers
have something to be compared with.

* submit-all-then-collect-all: a producer publishes N persistent messages with pipelined
  confirms, 2 consumer processes each reply persistently to a reply queue and ack, the
  producer collects all N replies; calls/s = N / total time;
* sequential round trip: publish one (confirmed), wait for its reply, 1000 times: p50/p99;
* ``AmqpTransport.publish`` of 10,000 bodies in one call: messages/s.

Usage: ``.venv/bin/python -m bench ceiling [--url URL] [-n 10000] [--seq 1000]`` (or
``bench/ceiling.py``). Prints a
small table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import pika
from pika.adapters.blocking_connection import BlockingConnection
from pika.spec import Basic, BasicProperties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import request_reply  # noqa: E402

URL = os.environ.get("EC_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
PERSISTENT = BasicProperties(delivery_mode=2)


def body_for(i: int) -> bytes:
    return json.dumps({"call": f"c-{i:08d}", "fn": "mod:fn", "args": [i]}).encode().ljust(100)


def declare(channel, queue: str, kind: str) -> None:
    arguments = {"x-queue-type": "quorum"} if kind == "quorum" else {}
    channel.queue_declare(queue, durable=True, arguments=arguments)


# -- consumer processes ------------------------------------------------------------------


def consume(url: str, queue: str, replies: str, prefetch: int, ready) -> None:
    """Reply persistently to every message, then ack it (manual acks)."""
    conn = BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=prefetch)

    def on_message(ch, method, _properties, body):
        ch.basic_publish("", replies, body, PERSISTENT)
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message)
    ready.set()
    try:
        channel.start_consuming()
    except (KeyboardInterrupt, pika.exceptions.AMQPError):
        pass


# -- the producer ------------------------------------------------------------------------


class Producer:
    """Pipelined publisher confirms plus a reply consumer, on one connection. ``replies``
    None: an exclusive server-named queue (``self.inbox``) whose messages may hold several
    newline-separated replies (ec's packed replies)."""

    def __init__(self, url: str, queue: str, replies: str | None):
        self.conn = BlockingConnection(pika.URLParameters(url))
        self.queue = queue
        self.publisher = self.conn.channel()
        self.publisher._impl.confirm_delivery(ack_nack_callback=self._on_confirm)
        self.published = self.nacked = 0
        self.low = 1  # every publish sequence number below this is confirmed
        self.outstanding: set[int] = set()
        self.received = 0
        self.collector = self.conn.channel()
        if replies is None:
            replies = self.inbox = self.collector.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self.collector.basic_consume(replies, self._on_reply, auto_ack=True)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        if method.multiple:
            tags = range(self.low, method.delivery_tag + 1)
            self.low = max(self.low, method.delivery_tag + 1)
        else:
            tags = (method.delivery_tag,)
        for tag in tags:
            if tag in self.outstanding:
                self.outstanding.remove(tag)
                self.nacked += isinstance(method, Basic.Nack)
        if not self.outstanding:
            self.conn.call_later(0, lambda: None)  # wake process_data_events

    def _on_reply(self, _ch, _method, _properties, body) -> None:
        self.received += body.count(b"\n") + 1

    def publish(self, bodies: list[bytes]) -> None:
        for i, body in enumerate(bodies, 1):
            self.publisher._impl.basic_publish("", self.queue, body, PERSISTENT)
            self.published += 1
            self.outstanding.add(self.published)
            if i % 500 == 0:
                self.conn.process_data_events(0)
        while self.outstanding:
            self.conn.process_data_events(time_limit=1)
        if self.nacked:
            raise RuntimeError(f"{self.nacked} messages nacked")

    def collect(self, total: int) -> None:
        while self.received < total:
            self.conn.process_data_events(time_limit=1)


def ceiling(url: str, n: int, sequential: int, kind: str, prefetch: int) -> dict:
    run = uuid.uuid4().hex[:8]
    queue, replies = f"ec.bench.{run}", f"ec.bench.{run}.replies"
    admin = BlockingConnection(pika.URLParameters(url))
    channel = admin.channel()
    declare(channel, queue, kind)
    declare(channel, replies, kind)
    ready = [multiprocessing.Event() for _ in range(2)]
    workers = [multiprocessing.Process(target=consume, args=(url, queue, replies, prefetch, r),
                                       daemon=True) for r in ready]
    try:
        for worker in workers:
            worker.start()
        for r in ready:
            r.wait(30)
        producer = Producer(url, queue, replies)
        publishing, total, latencies = request_reply(
            lambda k: producer.publish([body_for(i) for i in range(k)]), producer.collect, n, sequential)
        latencies.sort()
        producer.conn.close()
        return {
            "kind": kind, "consumers": 2, "prefetch": prefetch, "n": n,
            "calls_per_s": round(n / total),
            "publish_msgs_per_s": round(n / publishing),
            "sequential": sequential,
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        }
    finally:
        for worker in workers:
            worker.terminate()
            worker.join(5)
        channel.queue_delete(queue)
        channel.queue_delete(replies)
        admin.close()


def transport_publish(url: str, n: int = 10_000, kind: str = "quorum") -> dict:
    """``AmqpTransport.publish`` of ``n`` bodies in one call (declare excluded)."""
    from ectool.transport.amqp import AmqpTransport

    queue = f"ec.bench.{uuid.uuid4().hex[:8]}.transport"
    bodies = [body_for(i) for i in range(n)]
    with AmqpTransport(url) as transport:
        transport.declare(queue, kind=kind)
        try:
            started = time.perf_counter()
            transport.publish(queue, bodies)
            elapsed = time.perf_counter() - started
            assert transport.depth(queue) == n
        finally:
            transport.delete_queue(queue)
    return {"n": n, "kind": kind, "msgs_per_s": round(n / elapsed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=URL)
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--seq", type=int, default=1000)
    parser.add_argument("--kind", choices=["quorum", "classic"], default="quorum")
    parser.add_argument("--prefetch", type=int, default=50)
    args = parser.parse_args(argv)

    raw = ceiling(args.url, args.n, args.seq, args.kind, args.prefetch)
    ours = transport_publish(args.url, 10_000, args.kind)
    print(f"RabbitMQ ceiling, raw pika, {args.kind} queues, 2 consumers, prefetch {args.prefetch}"
          f", {os.cpu_count()} CPUs")
    print(f"  {'submit all, then collect all':32} {raw['n']:>6} calls  "
          f"{raw['calls_per_s']:>8} calls/s  (publish phase {raw['publish_msgs_per_s']} msgs/s)")
    print(f"  {'sequential round trip':32} {raw['sequential']:>6} calls  "
          f"p50 {raw['p50_ms']} ms  p99 {raw['p99_ms']} ms")
    print(f"  {'AmqpTransport.publish, 1 call':32} {ours['n']:>6} msgs   "
          f"{ours['msgs_per_s']:>8} msgs/s")
    print(json.dumps({"bench": "ceiling", "raw": raw, "transport_publish": ours}))


if __name__ == "__main__":
    main()
