"""The worker's handling of bundled deliveries, step by step: a real SQLite store, the
worker's own handle(), and a consumer and transport that only record what they are asked.

(test_bundles.py runs the same paths through real workers and brokers; these pin the
orderings a crash between two steps would expose.)
"""

from __future__ import annotations

import time

import pytest

from ectool.config import Config
from ectool.messages import CallEncoder, bundle, new_id, unbundle
from ectool.transport import Delivery
from ectool.transport.base import REDELIVERED
from ectool.worker.executor import ExecutorDied
from ectool.worker.runtime import Result, SocketInfo, WorkerRuntime


class Consumer:
    def __init__(self):
        self.acked, self.nacked, self.dead = [], [], []
        self.held = []  # deliveries buffered, not yet taken

    def get(self, timeout=None):
        return self.held.pop(0) if self.held else None

    def ack(self, deliveries):
        self.acked += deliveries

    def nack(self, deliveries):
        self.nacked += deliveries

    def dead_letter(self, delivery, reason):
        self.dead.append(delivery)


class Transport:
    def __init__(self):
        self.published = []  # (queue, body, headers)

    def publish(self, queue, bodies, delay=0.0, headers=None):
        self.published += [(queue, body, headers) for body in bodies]

    def replies(self, replies):
        pass

    def bury(self, queue, body, reason):
        self.published.append(("ec.dead", body, {"reason": reason}))


@pytest.fixture
def store(tmp_path):
    from ectool.store import open_store

    open_store(f"sqlite:///{tmp_path / 'ec.db'}")


def runtime(execute=None) -> WorkerRuntime:
    """A worker without processes or connections: handle() and what it calls, for real."""
    rt = object.__new__(WorkerRuntime)
    rt.config = Config(db="sqlite:///x", broker="sqlite:///y")
    rt.stopping, rt.pid, rt.crashes, rt.park_after = False, 4242, 0, 30.0
    rt.consumer, rt.transport = Consumer(), Transport()
    rt.sockets = {"s": SocketInfo("s", "t", "q.s", None, 0, 0.0)}
    rt.executed, rt.attempts, rt.followed = [], [], []

    def run(m):
        rt.executed.append(m.id)
        rt.attempts.append(m.attempt)
        return Result(m, "done", result_json="1", ms=1.0)

    rt.execute = execute or run
    rt.follow_on_many = lambda pairs, recovering: rt.followed.append(([m.id for m, _ in pairs], recovering))
    return rt


def delivered(body: bytes, queue: str, tag: int, headers: dict | None) -> Delivery:
    """What a transport delivers of a message published with ``headers`` (a copy marked
    REDELIVERED reports a redelivery: test_transport_conformance checks both do)."""
    headers = headers or {}
    return Delivery(body, queue, tag, 1 if headers.get(REDELIVERED) else 0, headers)


def calls(n: int) -> tuple[list[str], list[bytes]]:
    """``n`` queued calls of socket ``s`` in the store: their ids and message bodies."""
    from ectool.store.models import Call

    encoder = CallEncoder("s", "t")
    ids, bodies = [], []
    for i in range(n):
        cid = new_id()
        body, args = encoder.encode(cid, cid, [i], {})
        Call.insert(id=cid, socket="s", root=cid, status="queued", attempts=0, args=args).execute()
        ids.append(cid)
        bodies.append(body)
    return ids, bodies


def test_a_bundle_that_comes_back_goes_out_as_single_redeliveries_that_recover_its_flows(store):
    from ectool.store.models import Call

    ids, bodies = calls(4)
    # its worker recorded all four outcomes, then died before advancing their flows/plugs
    Call.update(status="done", attempts=1).where(Call.id.in_(ids)).execute()
    first = runtime()
    back = Delivery(bundle(bodies, 4)[0], "q.s", 1, redeliveries=1)
    first.handle([back])
    assert first.consumer.acked == [back] and first.executed == []
    assert [(q, b, h) for q, b, h in first.transport.published] == [("q.s", b, {REDELIVERED: 1}) for b in bodies]
    singles = [delivered(b, q, 10 + i, h) for i, (q, b, h) in enumerate(first.transport.published)]
    second = runtime()
    second.handle(singles)
    assert second.executed == [] and len(second.consumer.acked) == 4  # final: never run again
    assert sorted(i for ids_, recovering in second.followed for i in ids_ if recovering) == sorted(ids)


def test_two_copies_of_a_call_in_one_batch_run_once_and_the_redelivered_copy_is_handled(store):
    from ectool.store.models import Call

    ids, bodies = calls(2)
    rt = runtime()
    copies = [Delivery(bodies[0], "q.s", 1), Delivery(bodies[1], "q.s", 2), Delivery(bodies[0], "q.s", 3)]
    rt.handle(copies)
    assert sorted(rt.executed) == sorted(ids) and len(rt.consumer.acked) == 3
    assert {r.attempts for r in Call.select()} == {1}
    Call.update(status="done").where(Call.id == ids[0]).execute()
    rt = runtime()
    rt.handle([Delivery(bodies[0], "q.s", 4), Delivery(bodies[0], "q.s", 5, redeliveries=1)])
    assert rt.followed == [([ids[0]], True)], "the redelivered copy recovers the call's flow"
    assert len(rt.consumer.acked) == 2 and rt.executed == []


def test_an_executor_death_backs_off_and_gives_the_call_back(store):
    from ectool.store.models import Call

    ids, bodies = calls(1)

    def die(m):
        raise ExecutorDied("the executor exited")

    rt = runtime(die)
    started = time.monotonic()
    rt.handle([Delivery(bodies[0], "q.s", 1)])
    assert rt.crashes == 1 and time.monotonic() - started >= 0.5
    assert len(rt.consumer.nacked) == 1 and rt.consumer.acked == []
    row = Call.get_by_id(ids[0])
    assert (row.status, row.attempts) == ("queued", 1)  # charged: a delivery limit counts it


def test_slow_calls_spill_the_rest_of_their_bundle_after_recording_what_ran(store):
    from ectool.store.models import Call

    ids, bodies = calls(4)
    rt = runtime()
    recorded_before_spill = []

    def slow(m):
        time.sleep(0.15)
        rt.executed.append(m.id)
        return Result(m, "done", result_json="1", ms=150.0)

    def publish(queue, more, delay=0.0, headers=None):
        recorded_before_spill.append(Call.get_by_id(ids[0]).status)
        rt.transport.published += [(queue, b, headers) for b in more]

    rt.execute = slow
    rt.transport.publish = publish
    whole = Delivery(bodies[3], "q.s", 2)
    started = time.monotonic()
    rt.handle([Delivery(bundle(bodies[:3], 3)[0], "q.s", 1), whole])
    took = time.monotonic() - started
    assert rt.executed == [ids[0], ids[3]]  # one bundled call ran, the single one too
    assert [b for _, b, _ in rt.transport.published] == bodies[1:3]  # the rest went out alone
    assert recorded_before_spill == ["done"], "what ran is recorded before the rest is handed back"
    assert took < 0.5 and rt.crashes == 0, "no pause after a spill"
    rows = {r.id: (r.status, r.attempts) for r in Call.select()}
    assert [rows[i] for i in ids] == [("done", 1), ("queued", 0), ("queued", 0), ("done", 1)]
    assert len(rt.consumer.acked) == 2 and all(len(unbundle(d.body)) in (1, 3) for d in rt.consumer.acked)


def test_a_bundle_is_never_returned_whole_so_a_call_waiting_for_its_retry_is_not_run_again(store):
    from ectool.store.models import Call

    ids, bodies = calls(3)

    def fail_then_stop(m):
        rt.executed.append(m.id)
        rt.stopping = True  # SIGTERM while the first call runs
        return Result(m, "retrying", error_type="ValueError", error_message="try again", retry_delay=5.0)

    rt = runtime(fail_then_stop)
    rt.sockets["s"].retries = 3
    bundled = Delivery(bundle(bodies, 3)[0], "q.s", 1)
    rt.handle([bundled])
    assert rt.executed == [ids[0]]
    assert rt.consumer.acked == [bundled] and rt.consumer.nacked == [], "acked, not returned whole"
    from ectool.messages import decode

    out = [b for _, b, _ in rt.transport.published]
    assert (decode(out[0]).id, decode(out[0]).attempt) == (ids[0], 2)  # its retry, scheduled
    assert out[1:] == bodies[1:], "the two unrun calls went out on their own"
    rows = {r.id: (r.status, r.attempts) for r in Call.select()}
    assert rows[ids[0]] == ("retrying", 1) and rows[ids[1]] == rows[ids[2]] == ("queued", 0)


def test_of_two_attempts_of_a_call_in_one_batch_the_newer_runs(store):
    from ectool.store.models import Call

    ids, bodies = calls(1)
    from ectool.messages import decode

    Call.update(status="retrying", attempts=1).where(Call.id == ids[0]).execute()
    second = decode(bodies[0]).next_attempt().encode()
    rt = runtime()
    rt.handle([Delivery(bodies[0], "q.s", 1, redeliveries=1), Delivery(second, "q.s", 2)])
    assert rt.executed == [ids[0]] and rt.attempts == [2], "the retry ran, not the first attempt again"
    assert len(rt.consumer.acked) == 2 and Call.get_by_id(ids[0]).status == "done"


def test_a_parked_copy_of_a_redelivered_call_stays_a_redelivery(store, monkeypatch):
    from ectool.store.models import Call
    from ectool.worker import runtime as worker

    ids, bodies = calls(2)
    Call.update(status="running", attempts=1, host=worker.HOST, worker_pid=99).execute()
    monkeypatch.setattr(WorkerRuntime, "running_elsewhere", lambda self, row: True)
    rt = runtime()
    rt.handle([Delivery(bodies[0], "q.s", 1, redeliveries=1), Delivery(bodies[1], "q.s", 2, headers={})])
    parked = {b: h for _, b, h in rt.transport.published}
    assert parked[bodies[0]].get(REDELIVERED) == 1, "its flow is recovered by the copy if need be"
    assert REDELIVERED not in parked[bodies[1]]


def test_after_a_spill_the_bundles_still_held_go_out_one_call_to_a_message(store):
    from ectool.store.models import Call

    ids, bodies = calls(6)
    rt = runtime()

    def slow(m):
        time.sleep(0.15)
        rt.executed.append(m.id)
        return Result(m, "done", result_json="1", ms=150.0)

    rt.execute = slow
    held_bundle, held_single = Delivery(bundle(bodies[3:5], 2)[0], "q.s", 2), Delivery(bodies[5], "q.s", 3)
    rt.consumer.held = [held_bundle, held_single]
    rt.handle([Delivery(bundle(bodies[:3], 3)[0], "q.s", 1)])
    assert rt.spilled
    rt.spread_held()
    assert rt.executed == [ids[0], ids[5]] and not rt.spilled
    assert [(b, h) for _, b, h in rt.transport.published] == [(b, None) for b in bodies[1:5]]
    assert held_bundle in rt.consumer.acked and held_single in rt.consumer.acked
    rows = {r.id: (r.status, r.attempts) for r in Call.select()}
    assert [rows[i] for i in ids] == [("done", 1), ("queued", 0), ("queued", 0), ("queued", 0), ("queued", 0),
                                      ("done", 1)]


def test_a_held_delivery_is_handed_off_on_time_not_a_poll_later():
    from ectool.transport.amqp_consumer import POLL, AmqpConsumer

    c = object.__new__(AmqpConsumer)
    c._hand_off_after, c._received = 1.0, {}
    assert c._next_wake() == POLL
    c._received = {7: (time.monotonic() - 0.7, None), 8: (time.monotonic(), None)}
    assert 0.2 < c._next_wake() <= 0.3
    c._received = {7: (time.monotonic() - 5.0, None)}
    assert c._next_wake() == 0.0
