"""The transport conformance suite: one behaviour, checked on every implementation.

Each test runs once per ``broker_url`` (``sqlite://`` and ``amqp://``); a test that only
makes sense for one implementation says so at the end of the file. Queues are unique per
test (``queue_name``) and deleted afterwards, dead letters included, so tests against the
shared RabbitMQ never see each other's messages.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ectool.errors import EcError, Unreachable, UsageError
from ectool.transport import DEAD_QUEUE, Consumer, Delivery, Transport, connect

pytestmark = pytest.mark.timeout(60)

LIMIT = 2  # delivery_limit for these tests
ROOT = Path(__file__).resolve().parents[1]


class Transports:
    """Opens transports and consumers on one URL; closes them and deletes the test's
    queues (and its dead letters, on RabbitMQ) at the end."""

    def __init__(self, url: str, queue: str):
        self.url = url
        self.queue = queue
        self.queues = {queue}
        self.exchanges: set[str] = set()
        self.opened: list[Transport] = []
        self.consumers: list[Consumer] = []

    @property
    def amqp(self) -> bool:
        return self.url.startswith("amqp")

    def open(self, delivery_limit: int = LIMIT) -> Transport:
        transport = connect(self.url, delivery_limit=delivery_limit)
        self.opened.append(transport)
        return transport

    def consumer(self, transport: Transport, queues: list[str] | None = None,
                 prefetch: int = 1) -> Consumer:
        consumer = transport.consumer(queues or [self.queue], prefetch)
        self.consumers.append(consumer)
        return consumer

    def track(self, queue: str) -> str:
        self.queues.add(queue)
        return queue

    def cleanup(self) -> None:
        for consumer in self.consumers:
            _quietly(consumer.close)
        if self.amqp:
            _quietly(self._clean_rabbitmq)
        for transport in self.opened:
            _quietly(transport.close)

    def _clean_rabbitmq(self) -> None:
        from ectool.transport.amqp_connection import dead_letter_from, open_connection

        conn = open_connection(self.url, "test cleanup")
        try:
            channel = conn.channel()
            for queue in self.queues:
                channel.queue_delete(queue)
            for exchange in self.exchanges:
                channel.exchange_delete(exchange)
            # remove our dead letters; leave everyone else's (unacked ones go back)
            while True:
                method, properties, body = channel.basic_get(DEAD_QUEUE, auto_ack=False)
                if method is None:
                    break
                if dead_letter_from(properties, body).queue in self.queues:
                    channel.basic_ack(method.delivery_tag)
        finally:
            conn.close()


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - cleanup must not hide the test's own failure
        pass


@pytest.fixture
def transports(broker_url: str, queue_name: str):
    opened = Transports(broker_url, queue_name)
    try:
        yield opened
    finally:
        opened.cleanup()


@pytest.fixture
def tq(transports: Transports, queue_name: str) -> Transport:
    """A transport (delivery_limit=LIMIT) with ``queue_name`` declared as a quorum queue."""
    transport = transports.open()
    transport.declare(queue_name)
    return transport


def get_any(consumers: list[Consumer], timeout: float) -> Delivery | None:
    """The first delivery any of ``consumers`` gets within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for consumer in consumers:
            delivery = consumer.get(timeout=0.05)
            if delivery is not None:
                return delivery
    return None


def ours(transport: Transport, queue: str) -> list:
    return [d for d in transport.dead_letters(limit=100_000) if d.queue == queue]


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> object:
    """Poll ``predicate`` (for state no get() can wait on) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# -- publish and consume ---------------------------------------------------------------


def test_publish_then_consume_fifo_same_bytes(broker_url, queue_name, transports, tq):
    bodies = [b"first", b"\x00\xff binary \n", b"", "caf\u00e9".encode(), b"x" * 100_000]
    tq.publish(queue_name, bodies[:3], headers={"call": "c-1"})
    tq.publish(queue_name, bodies[3:])
    consumer = transports.consumer(tq, prefetch=10)
    got = [consumer.get(timeout=5) for _ in bodies]
    assert [d.body for d in got] == bodies
    assert all(d.queue == queue_name and d.redeliveries == 0 for d in got)
    assert got[0].headers.get("call") == "c-1"
    consumer.ack(got)
    assert consumer.get(timeout=0.2) is None


def test_ack_removes(broker_url, queue_name, transports, tq):
    tq.publish(queue_name, [b"a", b"b"])
    consumer = transports.consumer(tq, prefetch=2)
    deliveries = [consumer.get(timeout=5), consumer.get(timeout=5)]
    consumer.ack(deliveries)
    consumer.close()
    assert transports.consumer(tq).get(timeout=0.5) is None
    assert tq.depth(queue_name) == 0


def test_nack_returns_at_once(broker_url, queue_name, transports, tq):
    tq.publish(queue_name, [b"job"])
    holder = transports.consumer(tq)
    delivery = holder.get(timeout=5)
    other = transports.consumer(tq)
    assert other.get(timeout=0.3) is None  # held by `holder`
    holder.nack([delivery])
    # available again (RabbitMQ may hand it to either consumer: both have room); nothing
    # else gives it back while `holder` lives, so getting it at all is the nack's doing
    again = get_any([other, holder], timeout=30)
    assert again is not None and again.body == b"job"


def test_close_without_ack_redelivers(broker_url, queue_name, transports, tq):
    tq.publish(queue_name, [b"job"])
    first = transports.consumer(tq)
    delivery = first.get(timeout=5)
    assert delivery.redeliveries == 0
    first.close()
    again = transports.consumer(tq).get(timeout=5)
    assert again is not None and again.body == b"job"
    assert again.redeliveries >= 1


def test_a_copy_marked_redelivered_is_delivered_as_a_redelivery(broker_url, queue_name, transports, tq):
    from ectool.transport.base import REDELIVERED

    tq.publish(queue_name, [b"copy"], headers={REDELIVERED: 1})
    tq.publish(queue_name, [b"fresh"])
    consumer = transports.consumer(tq)
    got = {}
    for _ in range(2):
        delivery = consumer.get(timeout=5)
        got[delivery.body] = delivery
        consumer.ack([delivery])
    assert got[b"copy"].redeliveries >= 1 and got[b"fresh"].redeliveries == 0


HOLDER = """
import sys, time
from ectool.transport import connect
transport = connect(sys.argv[1], delivery_limit=int(sys.argv[3]))
consumer = transport.consumer([sys.argv[2]], 1)
delivery = consumer.get(timeout=10)
print("held" if delivery is not None else "nothing", flush=True)
time.sleep(120)
"""


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode().strip() if ready else ""


def test_killed_consumer_process_redelivers(broker_url, queue_name, transports, tq):
    tq.publish(queue_name, [b"job"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, broker_url, queue_name, str(LIMIT)],
                            stdout=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        assert _readline(proc, timeout=15) == "held"
        consumer = transports.consumer(tq)
        assert consumer.get(timeout=0.3) is None  # the holder has it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        again = consumer.get(timeout=5)
        assert again is not None and again.body == b"job"
        assert again.redeliveries >= 1
        consumer.ack([again])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# -- dead letters ------------------------------------------------------------------------


def test_delivery_limit_moves_to_dead_letters(broker_url, queue_name, transports, tq):
    assert tq.delivery_limit == LIMIT
    tq.publish(queue_name, [b"poison"])
    seen = []
    for _ in range(LIMIT + 2):
        consumer = transports.consumer(tq)
        delivery = consumer.get(timeout=3 if len(seen) <= LIMIT else 1)
        consumer.close()  # without ack: a return
        if delivery is None:
            break
        seen.append(delivery.redeliveries)
    assert seen == list(range(LIMIT + 1))  # delivered delivery_limit + 1 times, no more
    dead = wait_for(lambda: ours(tq, queue_name))
    assert [d.body for d in dead] == [b"poison"]
    assert dead[0].reason
    assert transports.consumer(tq).get(timeout=0.3) is None
    assert tq.depth(queue_name) == 0


def test_dead_letter_with_reason(broker_url, queue_name, transports, tq):
    tq.publish(queue_name, [b"bad", b"good"], headers={"call": "c-9"})
    consumer = transports.consumer(tq)
    bad = consumer.get(timeout=5)
    consumer.dead_letter(bad, "cannot decode the arguments")
    good = consumer.get(timeout=5)
    assert good.body == b"good"
    consumer.ack([good])
    consumer.close()
    assert transports.consumer(tq).get(timeout=0.3) is None
    dead = wait_for(lambda: ours(tq, queue_name))
    assert [(d.body, d.reason) for d in dead] == [(b"bad", "cannot decode the arguments")]
    assert dead[0].headers.get("call") == "c-9"
    # reading dead letters does not consume them (polled: ec.dead is shared, and on RabbitMQ
    # a test reading it at the same moment holds what it browses)
    assert [d.body for d in wait_for(lambda: ours(tq, queue_name))] == [b"bad"]


# -- delays, prefetch, depth ---------------------------------------------------------------


def test_delayed_publish(broker_url, queue_name, transports, tq):
    from ectool.transport.amqp_connection import delay_queue_name, quantize_ms

    transports.track(delay_queue_name(queue_name, quantize_ms(0.8)))
    consumer = transports.consumer(tq)
    started = time.monotonic()
    tq.publish(queue_name, [b"later"], delay=0.8)
    tq.publish(queue_name, [b"now"])
    now = consumer.get(timeout=0.5)
    assert now is not None and now.body == b"now"  # the delayed one does not block others
    consumer.ack([now])
    assert consumer.get(timeout=max(0.0, 0.6 - (time.monotonic() - started))) is None
    later = consumer.get(timeout=3)
    assert later is not None and later.body == b"later"
    assert time.monotonic() - started >= 0.75
    consumer.ack([later])


def test_prefetch_bounds_unacked(broker_url, queue_name, transports, tq):
    tq.publish(queue_name, [b"0", b"1", b"2", b"3", b"4"])
    consumer = transports.consumer(tq, prefetch=2)
    held = [consumer.get(timeout=5), consumer.get(timeout=5)]
    assert [d.body for d in held] == [b"0", b"1"]
    assert consumer.get(timeout=0.5) is None  # two unacked: no more
    other = transports.consumer(tq, prefetch=1)
    assert other.get(timeout=5).body == b"2"  # the rest is still available to others
    consumer.ack(held[:1])
    assert consumer.get(timeout=5).body == b"3"


def test_depth_counts_ready_messages(broker_url, queue_name, transports, tq):
    assert tq.depth(queue_name) == 0
    tq.publish(queue_name, [b"a", b"b", b"c"])
    assert tq.depth(queue_name) == 3
    consumer = transports.consumer(tq, prefetch=1)
    delivery = consumer.get(timeout=5)
    assert tq.depth(queue_name) == 2  # the unacked one is not waiting
    assert tq.purge(queue_name) == 2
    assert tq.depth(queue_name) == 0
    consumer.ack([delivery])
    assert tq.depth(queue_name + ".missing") == 0


def test_publish_2000_in_one_call(broker_url, queue_name, transports, tq):
    bodies = [f"message {i}".encode() for i in range(2000)]
    tq.publish(queue_name, bodies)
    assert tq.depth(queue_name) == 2000
    consumer = transports.consumer(tq, prefetch=200)
    received: list[Delivery] = []
    while len(received) < len(bodies):
        delivery = consumer.get(timeout=5)
        assert delivery is not None, f"only {len(received)} of {len(bodies)} arrived"
        received.append(delivery)
        if len(received) % 100 == 0:
            consumer.ack(received[-100:])
    assert [d.body for d in received] == bodies
    assert tq.depth(queue_name) == 0


# -- errors, declare, inbox ----------------------------------------------------------------


def test_publish_to_missing_queue_is_a_usage_error(broker_url, queue_name, transports, tq):
    with pytest.raises(UsageError, match="does not exist"):
        tq.publish(queue_name + ".missing", [b"x"])
    with pytest.raises(UsageError, match="does not exist"):
        tq.publish(queue_name + ".missing", [b"x"], delay=0.1)
    tq.publish(queue_name, [b"fine"])  # the transport still works
    assert tq.depth(queue_name) == 1


def test_declare_is_idempotent(broker_url, queue_name, transports, tq):
    tq.declare(queue_name)
    tq.declare(queue_name, kind="classic")  # exists with other settings: kept as it is
    tq.publish(queue_name, [b"x"])
    assert tq.depth(queue_name) == 1


def test_max_length_rejects_publish(broker_url, queue_name, transports, tq):
    full = transports.track(queue_name + ".bounded")
    # classic: RabbitMQ enforces max-length on quorum queues only loosely (a pipelined
    # batch can overshoot it by many messages), so the exact bound is a classic property
    tq.declare(full, kind="classic", max_length=2)
    tq.publish(full, [b"1", b"2"])
    with pytest.raises(EcError):
        tq.publish(full, [b"3"])
    assert tq.depth(full) == 2


def test_inbox_reply_round_trip(broker_url, queue_name, transports, tq):
    worker = transports.open()
    inbox = tq.inbox()
    try:
        worker.reply(inbox.address, b"call c-1 done")
        assert inbox.get(timeout=3) == b"call c-1 done"
        assert inbox.get(timeout=0.2) is None
        address = inbox.address
    finally:
        inbox.close()
    worker.reply(address, b"too late")  # the inbox is gone: no error
    worker.reply("no-such-inbox", b"nobody")
    worker.publish(queue_name, [b"still works"])
    assert worker.depth(queue_name) == 1


@pytest.mark.parametrize("inbox_of", ["inbox", "producer_inbox"])
def test_both_inboxes_get_replies_larger_ones_too(broker_url, transports, tq, inbox_of):
    """Every transport has a producer inbox (its own connection's, or an ordinary one) and
    carries replies up to its :attr:`max_reply_bytes`."""
    worker = transports.open()
    inbox = getattr(tq, inbox_of)()
    big = b"x" * (worker.max_reply_bytes or 200_000)
    try:
        worker.replies([(inbox.address, b"small"), (inbox.address, big)])
        assert [inbox.get(timeout=3), inbox.get(timeout=3)] == [b"small", big]
    finally:
        inbox.close()
    assert isinstance(tq.returns_unroutable, bool) and isinstance(tq.single_connection, bool)


def test_a_batch_of_replies_arrives_one_body_each_in_order(broker_url, transports, tq):
    worker = transports.open()
    first, second = tq.inbox(), transports.open().inbox()
    try:
        bodies = [json.dumps({"id": f"c-{i}", "result": "x" * (i * 100)}).encode() for i in range(40)]
        worker.replies([(first.address, b) for b in bodies] + [(second.address, b"other")])
        got = [first.get(timeout=3) for _ in bodies]  # ~80 kB: packed into few messages
        assert got == bodies  # unpacked by the inbox, one body each
        assert first.get(timeout=0.2) is None
        assert second.get(timeout=3) == b"other"
    finally:
        first.close()
        second.close()


# -- events ------------------------------------------------------------------------------


@pytest.fixture
def exchange(transports, queue_name) -> str:
    """A per-test event exchange (deleted afterwards on RabbitMQ)."""
    transports.exchanges.add(queue_name + ".events")
    return queue_name + ".events"


def drain(stream, count: int, timeout: float = 5.0) -> list[bytes]:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        body = stream.get(timeout=max(0.0, deadline - time.monotonic()))
        if body is not None:
            got.append(body)
    return got


def test_events_reach_subscribers_by_pattern(broker_url, transports, tq, exchange):
    calls = tq.subscribe_events(exchange, ["call.*"])
    done = transports.open().subscribe_events(exchange, ["call.done", "agent.#"])
    every = transports.open().subscribe_events(exchange)
    try:
        publisher = transports.open()
        publisher.publish_events(exchange, [("call.done", b"1"), ("worker.heartbeat", b"2"),
                                            ("call.failed", b"3"), ("agent.online", b"4")])
        assert drain(calls, 2) == [b"1", b"3"]
        assert drain(done, 2) == [b"1", b"4"]
        assert drain(every, 4) == [b"1", b"2", b"3", b"4"]
        assert calls.get(timeout=0.3) is None and every.get(timeout=0) is None
    finally:
        for stream in (calls, done, every):
            stream.close()


def test_events_only_after_subscribing_and_per_exchange(broker_url, transports, tq, exchange):
    publisher = transports.open()
    publisher.publish_events(exchange, [("call.done", b"before")])  # nobody listens: fine
    other = exchange + ".other"
    transports.exchanges.add(other)
    stream = tq.subscribe_events(exchange)
    try:
        publisher.publish_events(other, [("call.done", b"elsewhere")])
        publisher.publish_events(exchange, [("call.done", b"after")])
        assert drain(stream, 1) == [b"after"]
        assert stream.get(timeout=0.3) is None
    finally:
        stream.close()


def test_events_in_order_and_wake_a_waiting_subscriber(broker_url, transports, tq, exchange,
                                                       monkeypatch):
    import threading

    # the embedded stream's fallback poll comes after an hour: only a wake-up ends its wait
    monkeypatch.setattr("ectool.transport.sqlite_inbox.POLL", 3600.0)
    stream = tq.subscribe_events(exchange, ["call.#"])
    try:
        publisher = transports.open()
        assert stream.get(timeout=0.2) is None
        first: list[bytes | None] = []
        waiting = threading.Thread(target=lambda: first.append(stream.get(timeout=3600)), daemon=True)
        waiting.start()
        bodies = [str(i).encode() for i in range(1000)]
        publisher.publish_events(exchange, [("call.queued", b) for b in bodies])
        waiting.join(120)
        assert first == [bodies[0]], "the waiting subscriber was not woken"
        assert drain(stream, 999, timeout=60) == bodies[1:]
    finally:
        stream.close()
    publisher.publish_events(exchange, [("call.done", b"nobody")])  # a closed stream: no error


# -- RabbitMQ only --------------------------------------------------------------------------


@pytest.fixture
def amqp_only(broker_url):
    if not broker_url.startswith("amqp"):
        pytest.skip("RabbitMQ-specific")


def _cut(connection) -> None:
    """Break a pika connection's socket under it, as a broker restart or network cut would."""
    connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)


def test_amqp_unreachable_is_one_line(amqp_only):
    with pytest.raises(Unreachable) as caught:
        connect("amqp://guest:secret@127.0.0.1:1/%2F")
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value)


def test_amqp_publish_survives_lost_connection(amqp_only, broker_url, queue_name, transports, tq):
    tq.publish(queue_name, [b"before"])
    _cut(tq._conn)
    tq.publish(queue_name, [b"after-1", b"after-2"])
    assert tq.depth(queue_name) == 3


def test_amqp_consumer_reconnects(amqp_only, broker_url, queue_name, transports, tq):
    tq.publish(queue_name, [b"job"])
    consumer = transports.consumer(tq)
    delivery = consumer.get(timeout=5)
    _cut(consumer._conn)
    consumer.ack([delivery])  # on a lost connection: dropped, the broker redelivers
    again = consumer.get(timeout=10)
    assert again is not None and again.body == b"job" and again.redeliveries >= 1
    assert again.tag[0] != delivery.tag[0]
    consumer.ack([again])
    consumer.close()
    assert transports.consumer(tq).get(timeout=0.3) is None


def test_amqp_delay_quantization(amqp_only):
    from ectool.transport.amqp_connection import quantize_ms

    assert [quantize_ms(s) for s in (0.0001, 0.05, 0.8, 1.234, 99.9, 3600)] == [
        1, 50, 800, 1300, 100_000, 3_600_000]


def test_amqp_refused_messages_are_sent_again(amqp_only, queue_name, transports, tq):
    """A message the broker nacks (here: a full queue; on a cluster, a quorum queue whose
    leader is moving) is sent again after a pause: once the queue has room it is enqueued,
    and publish returns as if nothing happened."""
    import logging

    full = transports.track(queue_name + ".bounded")
    tq.declare(full, kind="classic", max_length=1)
    tq.publish(full, [b"first"])
    other = transports.open()

    class DrainOnRefusal(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "refused" in record.getMessage():
                other.purge(full)  # room again before the resend

    handler = DrainOnRefusal()
    logger = logging.getLogger("ectool.transport.amqp")
    logger.addHandler(handler)
    try:
        tq.publish(full, [b"second"])
    finally:
        logger.removeHandler(handler)
    consumer = other.consumer([full])
    try:
        got = consumer.get(timeout=5)
        assert got is not None and got.body == b"second"
    finally:
        consumer.close()
