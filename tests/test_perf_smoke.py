"""The client's fast paths (issue 9) keep their meaning.

No timings are asserted here: the benchmarks measure, these tests only check that the
precompiled SQL, the shared-prefix encoder and the quieter store polling of ``Client.wait``
give the same results as the general code they replace. (The benchmarks themselves are
smoke-tested in test_bench_smoke.py.)
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from ectool import calls
from ectool.messages import CallEncoder, CallMessage, decode, dumps


@pytest.mark.parametrize("cont", [None, {"next": [{"socket": "s"}], "label": "ü\n"}])
@pytest.mark.parametrize("args,kwargs", [([], {}), ([1, "x\"y", b"\xff\x00", {"a": (1, 2)}], {"k": "é", "b": b"z"}),
                                         (("t",), {"n": None})])
def test_call_encoder_matches_call_message(args, kwargs, cont):
    for parent, flow, reply_to, pin in ((None, None, None, None), ("p\\1", "f\u2028", "amq.gen-x", "ab12" * 10)):
        enc = CallEncoder('so"ck', "ta\\sk", parent=parent, flow=flow, reply_to=reply_to, cont=cont,
                          max_bytes=1 << 20, pin=pin)
        for root in ("id-1", "other-root"):
            body, row_args = enc.encode("id-1", root, args, kwargs)
            msg = CallMessage(id="id-1", socket='so"ck', task="ta\\sk", args=list(args), kwargs=dict(kwargs),
                              root=root, parent=parent, flow=flow, reply_to=reply_to, cont=cont, pin=pin)
            assert body == msg.encode(1 << 20)
            assert decode(body) == decode(msg.encode()) and decode(body).pin == pin
            assert (b'"pin"' in body) is (pin is not None)  # unpinned messages are as before
            assert row_args == dumps({"args": list(args), "kwargs": dict(kwargs)})


def test_call_encoder_refuses_what_encode_refuses():
    from ectool.errors import UsageError

    with pytest.raises(UsageError, match="not JSON-serialisable"):
        CallEncoder("s", "t").encode("i", "i", [float("nan")], {})
    with pytest.raises(UsageError, match="not JSON-serialisable"):
        CallEncoder("s", "t").encode("i", "i", [object()], {})
    with pytest.raises(UsageError, match="over the limit of 100"):
        CallEncoder("s", "t", max_bytes=100).encode("i", "i", ["x" * 200], {})


@pytest.fixture
def client(tmp_path):
    from ectool import network
    from ectool.config import load
    from ectool.store import open_store

    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    open_store(db_url)
    network.add_queue("q", "direct")
    network.add_processor("p", "file:///nowhere", "mod")
    network.add_socket("s", "q", "p", "f")
    c = calls.Client(load(db=db_url, broker=f"sqlite:///{tmp_path / 'queue.db'}"))
    try:
        yield c
    finally:
        c.close()


class NoisyInbox:
    """An inbox that never carries the awaited reply but is never quiet either."""

    address = "noisy"

    def __init__(self, real):
        self.real = real

    def get(self, timeout=None):
        time.sleep(min(0.01, timeout or 0))
        return json.dumps({"id": str(uuid.uuid4()), "status": "done", "result": "1"}).encode()

    def close(self):
        self.real.close()


def finish_in_store(call_id: str) -> None:
    from ectool.store.models import Call, now

    Call.update(status="done", result="42", attempts=1, finished=now()).where(Call.id == call_id).execute()


def test_wait_reads_the_store_when_replies_are_quiet(client, monkeypatch):
    monkeypatch.setattr(calls, "QUIET", 0.1)
    monkeypatch.setattr(calls, "FORCED", 3600.0)  # never, within this wait
    cid = client.submit("s", [([1], {})])[0]
    finish_in_store(cid)  # the outcome is recorded but no reply comes
    out = client.wait([cid], timeout=60)[cid]  # CallTimeout unless the quiet read found it
    assert out.ok and out.result == 42


def test_wait_reads_the_store_while_other_replies_keep_coming(client, monkeypatch):
    """A lost reply among many: the forced read finds it although the inbox is never quiet."""
    monkeypatch.setattr(calls, "QUIET", 3600.0)  # never quiet, within this wait
    monkeypatch.setattr(calls, "FORCED", 0.3)
    cid = client.submit("s", [([1], {})])[0]
    client._inbox = NoisyInbox(client.inbox)
    finish_in_store(cid)
    out = client.wait([cid], timeout=60)[cid]  # CallTimeout unless the forced read found it
    assert out.ok and out.result == 42
    assert client._replies  # the unrelated replies were kept for whoever waits for them


def test_wait_times_out_with_the_pending_ids(client, monkeypatch):
    from ectool.errors import CallTimeout

    monkeypatch.setattr(calls, "QUIET", 0.05)
    cid = client.submit("s", [([1], {})])[0]
    with pytest.raises(CallTimeout) as info:
        client.wait([cid], timeout=0.3)
    assert info.value.call_ids == [cid]


# -- RabbitMQ: declare on a miss, one connection for ec run ---------------------------------


@pytest.fixture
def amqp_client(tmp_path, amqp_url):
    """A sample network on SQLite and RabbitMQ whose queue does not exist yet; yields a
    factory of clients; every client is closed and the queue deleted afterwards."""
    import os

    from ectool import network
    from ectool.config import load
    from ectool.store import open_store
    from ectool.transport import connect

    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    open_store(db_url)
    network.add_queue("q", "direct")
    network.add_processor("p", "file:///nowhere", "mod")
    network.add_socket("s", "q", "p", "f")
    opened = []

    def make(**kwargs):
        c = calls.Client(load(db=db_url, broker=amqp_url), **kwargs)
        opened.append(c)
        return c

    try:
        yield make
    finally:
        for c in opened:
            c.close()
        with connect(amqp_url) as t:
            t.delete_queue(calls.broker_queue("s", os.environ["EC_NAMESPACE"]))


def reply_to_all(client, queue: str, count: int) -> list[dict]:
    """Play the worker: take ``count`` messages off ``queue``, record each outcome in the
    store, reply to its inbox, ack; the decoded messages."""
    from ectool.outcome import Outcome
    from ectool.transport import connect

    seen = []
    with connect(client.transport.url) as t:
        consumer = t.consumer([queue], prefetch=count)
        try:
            while len(seen) < count:
                d = consumer.get(timeout=10)
                assert d is not None, f"only {len(seen)} of {count} messages arrived"
                msg = json.loads(d.body)
                seen.append(msg)
                finish_in_store(msg["id"])
                t.reply(msg["reply_to"], Outcome(msg["id"], "done", result_json="42", attempts=1).encode())
                consumer.ack([d])
        finally:
            consumer.close()
    return seen


def test_amqp_publish_to_a_missing_queue_hands_back_the_bodies(amqp_url, queue_name):
    from ectool.transport import connect
    from ectool.transport.amqp_confirms import QueueMissing

    with connect(amqp_url) as t:
        with pytest.raises(QueueMissing) as info:
            t.publish(queue_name, [b"one", b"two"])
        assert sorted(info.value.returned) == [b"one", b"two"]
        assert info.value.queue == queue_name


@pytest.mark.parametrize("single", [False, True])
def test_amqp_client_declares_a_missing_queue_once_and_delivers_once(amqp_client, single):
    client = amqp_client(single_connection=single)
    ids = client.submit("s", [([i], {}) for i in range(3)])  # the queue does not exist yet
    queue = client.target("s").queue
    assert client.transport.depth(queue) == 3  # the returned messages were sent again, once each
    seen = reply_to_all(client, queue, 3)
    assert [m["id"] for m in seen] == ids
    out = client.wait(ids, timeout=10)
    assert all(o.ok and o.result == 42 for o in out.values())
    assert client.transport.depth(queue) == 0
    more = client.submit("s", [([9], {})])  # the queue exists now: published straight away
    assert client.transport.depth(queue) == 1
    reply_to_all(client, queue, 1)
    assert client.wait(more, timeout=10)[more[0]].ok


def test_amqp_single_connection_client_sends_events_and_gets_replies_on_its_own_connection(amqp_client,
                                                                                           monkeypatch):
    from ectool import events
    from ectool.transport.amqp_inbox import ProducerInbox

    client = amqp_client(single_connection=True)
    # not through the event thread (and its connection of its own)
    monkeypatch.setattr(events, "emit", lambda *a, **k: pytest.fail("events.emit used"))
    stream = client.transport.subscribe_events(events.exchange_name(client.config.namespace), ["call.*"])
    try:
        cid = client.submit("s", [([1], {})], parent="p-1")[0]
        assert isinstance(client.inbox, ProducerInbox)
        body = stream.get(timeout=5)
        assert body is not None
        event = json.loads(body)
        assert {k: event[k] for k in ("kind", "call", "socket", "root", "parent")} == \
            {"kind": "call.queued", "call": cid, "socket": "s", "root": cid, "parent": "p-1"}
        assert "flow" not in event and event["host"] == events.HOST
    finally:
        stream.close()
    reply_to_all(client, client.target("s").queue, 1)
    # from the reply, not from the store: no store read comes within this wait, and none is made
    monkeypatch.setattr(calls, "QUIET", 3600.0)
    monkeypatch.setattr(calls, "FORCED", 3600.0)
    monkeypatch.setattr(calls, "outcomes", lambda ids: pytest.fail("the store was read"))
    out = client.wait([cid], timeout=60)[cid]
    assert out.ok and out.result == 42


def test_amqp_producer_inbox_outlived_by_its_connection_leaves_the_outcome_to_the_store(amqp_client,
                                                                                     monkeypatch):
    monkeypatch.setattr(calls, "QUIET", 0.2)
    client = amqp_client(single_connection=True)
    cid = client.submit("s", [([1], {})])[0]
    client.transport._discard()  # the connection (and with it the inbox's queue) is gone
    assert client.inbox.get(timeout=0.1) is None  # no error: it only waits
    finish_in_store(cid)
    assert client.wait([cid], timeout=10)[cid].ok


def test_shim_signature_check_is_cached_and_unchanged():
    import functools
    import types

    from ectool.worker import shim

    m = types.ModuleType("m")

    def add(a, b=1):
        return a + b

    class Unhashable:
        __hash__ = None

        def __call__(self, x):
            return x

    m.add, m.len, m.part, m.unhashable = add, len, functools.partial(add, 1), Unhashable()
    for _ in range(2):  # the second time from the cache
        assert shim.run_call(m, "add", [1], {}, None) == {"status": "done", "result": "2"}
        bad = shim.run_call(m, "add", [], {"c": 1}, None)
        assert (bad["error_type"], bad["final"]) == ("TypeError", True)
        assert bad["error_message"].startswith("arguments do not match add(a, b=1):")
        assert shim.run_call(m, "len", [[1, 2]], {}, None)["result"] == "2"
        assert shim.run_call(m, "part", [], {"b": 5}, None)["result"] == "6"
        assert shim.run_call(m, "unhashable", [3], {}, None)["result"] == "3"
        assert shim.run_call(m, "unhashable", [], {}, None)["error_type"] == "TypeError"
    assert shim._signatures[add] is not None
