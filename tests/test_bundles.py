"""Bundles: many calls of one submit travel several to a message, on both transports.

Each call keeps its own row, outcome, reply and retry; a bundle's delivery is acked only
once every call in it is settled; a bad or deadly call in a bundle is dead-lettered alone;
and a worker hands the rest of a bundle back when its calls are slow, so idle workers
share them.
"""

from __future__ import annotations

import os
import uuid

import pytest

from ectool.messages import bundle, bundle_size, unbundle
from ectool.transport import Delivery
from ectool.worker.parts import Settlement
from helpers import dead_letters_where, sample_network, wait_children, workers

# -- pure ---------------------------------------------------------------------------------


def test_bundle_joins_up_to_size_calls_within_the_byte_limit_and_unbundle_splits_them():
    bodies = [b'{"id":"%d"}' % i for i in range(7)]
    assert bundle(bodies, 1) == bodies
    packed = bundle(bodies, 3)
    assert [len(unbundle(m)) for m in packed] == [3, 3, 1]
    assert [b for m in packed for b in unbundle(m)] == bodies
    tight = bundle(bodies, 10, max_bytes=25)  # two 10-byte bodies and a newline fit, three do not
    assert [len(unbundle(m)) for m in tight] == [2, 2, 2, 1] and all(len(m) <= 25 for m in tight)
    assert bundle([b"x" * 100], 5, max_bytes=10) == [b"x" * 100]  # one call alone: as it is
    assert unbundle(b'{"id":"solo"}') == [b'{"id":"solo"}']
    # JSON written by hand, with newlines in it or after it, is one message, not a bundle
    pretty = b'{"id": "x",\n  "v": 1\n}'
    assert unbundle(pretty) == [pretty] and unbundle(b'{"id":"x"}\n') == [b'{"id":"x"}\n']
    # a malformed message is cut at its newlines: each piece is decoded (or buried) alone
    assert unbundle(b'\x00junk\n{"id":"y"}\n\n') == [b"\x00junk", b'{"id":"y"}']


@pytest.mark.parametrize("calls,most,size", [(1, 16, 1), (7, 16, 1), (16, 16, 2), (64, 16, 8), (10_000, 16, 16),
                                             (10_000, 1, 1)])
def test_few_calls_are_not_bundled_many_are_up_to_the_setting(calls, most, size):
    assert bundle_size(calls, most) == size


class FakeConsumer:
    def __init__(self):
        self.acked, self.nacked = [], []

    def ack(self, deliveries):
        self.acked += deliveries

    def nack(self, deliveries):
        self.nacked += deliveries


def test_a_delivery_is_settled_once_when_its_last_part_is():
    consumer = FakeConsumer()
    s = Settlement(consumer)
    calls = [b'{"id":"%s"}' % x.encode() for x in "abcdef"]
    solo, trio, pair = (Delivery(body, "q", tag) for tag, body in
                        enumerate([calls[0], b"\n".join(calls[1:4]), b"\n".join(calls[4:])]))
    parts = s.split([solo, trio, pair])
    assert [p.body for p in parts] == calls
    assert [p.whole for p in parts] == [True, False, False, False, False, False]
    s.settle(parts[:3])
    assert consumer.acked == [solo] and consumer.nacked == []  # trio still has d open
    s.settle([parts[1]])  # settled already: not counted twice (trio still waits for d)
    assert consumer.acked == [solo]
    s.settle([parts[3]])
    assert consumer.acked == [solo, trio]
    s.settle([parts[4]], give_back=True)
    s.settle([parts[5]])
    assert consumer.nacked == [pair] and s.unsettled() == []  # a part given back returns it all
    s.settle([parts[5]])
    assert consumer.acked == [solo, trio] and consumer.nacked == [pair]  # never settled twice


# -- through real workers -------------------------------------------------------------------


@pytest.fixture
def net(tmp_path, broker_url):
    with sample_network(tmp_path, broker_url, EC_DELIVERY_LIMIT="3") as (env, proc):
        os.environ.update(EC_DB=env["EC_DB"], EC_BROKER=env["EC_BROKER"], EC_DELIVERY_LIMIT="3")
        try:
            yield env, proc
        finally:
            for key in ("EC_DB", "EC_BROKER", "EC_DELIVERY_LIMIT"):
                os.environ.pop(key, None)


def client():
    from ectool.calls import Client
    from ectool.config import load

    return Client(load())


def test_many_calls_travel_in_bundles_and_each_has_one_outcome(net):
    env, proc = net
    from ectool.calls import broker_queue
    from ectool.store.models import Call

    c = client()
    try:
        ids = c.submit("add_two", [([i, 1], {}) for i in range(400)])
        messages = c.transport.depth(broker_queue("add_two", os.environ["EC_NAMESPACE"]))
        assert messages == 400 // 16  # bundles of bundle_size(400, 16) = 16 calls
        with workers(env, proc, 2):
            outcomes = c.wait(ids, timeout=120)
    finally:
        c.close()
    assert [outcomes[i].result for i in ids] == [i + 1 for i in range(400)]
    rows = list(Call.select().where(Call.id.in_(ids)))
    assert len(rows) == 400 and {(r.status, r.attempts) for r in rows} == {("done", 1)}


def test_bundle_1_sends_every_call_alone(net, monkeypatch):
    from ectool.calls import broker_queue

    monkeypatch.setenv("EC_BUNDLE", "1")
    c = client()
    try:
        c.submit("add_two", [([i, 1], {}) for i in range(40)])
        assert c.transport.depth(broker_queue("add_two", os.environ["EC_NAMESPACE"])) == 40
    finally:
        c.close()


def _bundle_of(c, socket: str, calls: list[list]) -> list[str]:
    """Publish ``calls`` to ``socket`` as one bundle whatever bundle_size says, their rows
    stored first, as Client.submit does; the call ids."""
    from ectool.calls import insert_calls
    from ectool.messages import CallEncoder, new_id
    from ectool.store.models import now

    t = c.target(socket)
    encoder = CallEncoder(t.socket, t.task, reply_to=c.inbox.address)
    stamp, ids, bodies, rows = now(), [], [], []
    for args in calls:
        cid = new_id()
        body, args_json = encoder.encode(cid, cid, args, {})
        ids.append(cid)
        bodies.append(body)
        rows.append((cid, stamp, stamp, t.socket, None, cid, None, "queued", 0, args_json, stamp))
    insert_calls(rows)
    c.publisher.publish(t, bundle(bodies, len(bodies)))
    return ids


def test_slow_calls_of_a_bundle_are_handed_back_for_idle_workers(net):
    env, proc = net
    from ectool.store.models import Call

    c = client()
    try:
        with workers(env, proc, 2) as w:
            wait_children(w, 2)
            assert c.call("noop", [], timeout=60).ok  # both up and consuming
            ids = _bundle_of(c, "sleep", [[0.3, i] for i in range(8)])
            outcomes = c.wait(ids, timeout=120)
    finally:
        c.close()
    assert [outcomes[i].result for i in ids] == list(range(8))
    rows = list(Call.select().where(Call.id.in_(ids)))
    assert {(r.status, r.attempts) for r in rows} == {("done", 1)}  # handed back uncharged
    assert len({r.worker_pid for r in rows}) == 2, "the other worker took part of the bundle"


def test_a_call_that_kills_its_worker_is_dead_lettered_alone_and_the_rest_of_its_bundle_runs(net):
    env, proc = net
    from ectool.store.models import Call
    from ectool.transport import connect

    c = client()
    try:
        with workers(env, proc, 1) as w:
            good, poison, good2 = _bundle_of(c, "crash", [["thread"], ["kill"], ["thread"]])
            after = c.submit("echo", [(["after"], {})])[0]
            outcomes = c.wait([good, poison, good2, after], timeout=120)
            assert w.poll() is None
    finally:
        c.close()
    assert [outcomes[i].result for i in (good, good2, after)] == ["thread died, call survived"] * 2 + ["after"]
    assert (outcomes[poison].status, outcomes[poison].error_type) == ("dead", "DeliveryLimit")
    # claimed in one batch with the deadly call (the first one's outcome not yet committed
    # when it killed the worker), both are charged for that first death, as calls of one
    # batch always were; never for the later ones: a call that comes back runs alone
    assert [r.attempts for r in Call.select().where(Call.id.in_([good, good2]))] == [2, 2]
    with connect(env["EC_BROKER"]) as t:
        dead = dead_letters_where(t, lambda d: d.queue.endswith(".s.crash")
                                  and any(i.encode() in d.body for i in (good, poison, good2)))
    assert len(dead) == 1 and poison.encode() in dead[0].body and len(unbundle(dead[0].body)) == 1, \
        "the deadly call dead-lettered alone, not its bundle"
    assert "delivery limit" in dead[0].reason


def test_an_undecodable_call_in_a_bundle_is_dead_lettered_alone(net):
    env, proc = net
    from ectool.transport import connect

    c = client()
    try:
        with workers(env, proc, 1):
            cid, body = _body(c, "echo", "second")
            marker = uuid.uuid4().hex.encode()
            t = c.target("echo")
            c.publisher.publish(t, [b"\x00garbage-" + marker + b"\n" + body])
            out = c.wait([cid], timeout=60)[cid]
    finally:
        c.close()
    assert out.result == "second"
    with connect(env["EC_BROKER"]) as tr:
        dead = dead_letters_where(tr, lambda d: d.queue == t.queue and marker in d.body)
    assert len(dead) == 1 and dead[0].body == b"\x00garbage-" + marker, dead
    assert "undecodable" in dead[0].reason


def _body(c, socket: str, value) -> tuple[str, bytes]:
    """A stored call of ``socket`` with one argument: (id, its message body)."""
    from ectool.calls import insert_calls
    from ectool.messages import CallEncoder, new_id
    from ectool.store.models import now

    t = c.target(socket)
    cid, stamp = new_id(), now()
    body, args_json = CallEncoder(t.socket, t.task, reply_to=c.inbox.address).encode(cid, cid, [value], {})
    insert_calls([(cid, stamp, stamp, t.socket, None, cid, None, "queued", 0, args_json, stamp)])
    return cid, body
