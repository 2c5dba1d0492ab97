"""The worker's handling of bundled deliveries, step by step: a real SQLite store, a real
:class:`~ectool.worker.batch.Batch`, and a consumer, transport and executor that only record
what they are asked.

(test_bundles.py runs the same paths through real workers and brokers; these pin the
orderings a crash between two steps would expose.)
"""

from __future__ import annotations

import time

import pytest

from ectool.messages import CallEncoder, bundle, new_id, unbundle
from ectool.transport import Delivery
from ectool.transport.base import REDELIVERED
from ectool.worker.batch import Batch, Crashes, Deps, SocketInfo
from ectool.worker.executor import ExecutorDied
from ectool.worker.result import Result


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
    max_reply_bytes = None  # as ectool.transport.base.Transport: no limit

    def __init__(self, on_publish=None):
        self.published = []  # (queue, body, headers)
        self.on_publish = on_publish or (lambda: None)

    def publish(self, queue, bodies, delay=0.0, headers=None):
        self.on_publish()
        self.published += [(queue, body, headers) for body in bodies]

    def replies(self, replies):
        pass

    def bury(self, queue, body, reason):
        self.published.append(("ec.dead", body, {"reason": reason}))


@pytest.fixture
def store(tmp_path):
    from ectool.store import open_store

    open_store(f"sqlite:///{tmp_path / 'ec.db'}")


class Worker:
    """A worker's side of its batches, from fakes: what ran, what was followed on, what paused."""

    def __init__(self, execute=None, *, retries=0, elsewhere=False, on_publish=None, hand_off=0):
        self.hand_off = hand_off  # a call with args [i] hands [i + 1] off to this worker while i + 1 < this
        self.consumer, self.transport = Consumer(), Transport(on_publish)
        self.executed, self.attempts, self.followed, self.paused = [], [], [], []
        self.stopping, self.spilled = False, False
        self._execute = execute or (lambda w, m: Result(m, "done", result_json="1", ms=1.0))
        self.deps = Deps(self.consumer, self.transport, {"s": SocketInfo("s", "t", "q.s", None, retries, 0.0)},
                         self.execute, self.follow_on, pid=4242, host="this-host", processor="p",
                         stopping=lambda: self.stopping, running_elsewhere=lambda row: elsewhere,
                         crashes=Crashes(sleep=self.paused.append))

    def execute(self, m):
        self.executed.append(m.id)
        self.attempts.append(m.attempt)
        return self._execute(self, m)

    def follow_on(self, pairs, recovering, outbox=None):
        """As the engine does for a pipeline: the next step kept (its row running here) when
        the outbox allows, in the caller's transaction."""
        from ectool.messages import CallMessage
        from ectool.publisher import Target
        from ectool.store.models import Call

        self.followed.append(([m.id for m, _ in pairs], recovering))
        for m, out in pairs:
            i = m.args[0]
            if out.status == "done" and i + 1 < self.hand_off and outbox is not None and outbox.keeps("s", 1):
                nxt = CallMessage(id=new_id(), socket="s", task="t", args=[i + 1], kwargs={}, root=m.root)
                Call.insert(id=nxt.id, socket="s", root=m.root, status="running", attempts=1, host="this-host",
                            worker_pid=4242).execute()
                outbox.kept.append((Target("s", "t", "q.s", "direct", None), nxt))

    def handle(self, deliveries, spread=False):
        batch = Batch(self.deps, spread)
        batch.handle(deliveries)
        self.spilled = batch.spilled


def runtime(execute=None, **kwargs) -> Worker:
    return Worker(execute, **kwargs)


def slow(w, m):
    """A call that runs past SPILL_AFTER (the batch's clock, not the test's)."""
    time.sleep(0.15)
    return Result(m, "done", result_json="1", ms=150.0)


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

    def die(w, m):
        raise ExecutorDied("the executor exited")

    rt = runtime(die)
    rt.handle([Delivery(bodies[0], "q.s", 1)])
    assert rt.deps.crashes.count == 1 and rt.paused == [0.5], "the worker pauses before it takes more"
    assert len(rt.consumer.nacked) == 1 and rt.consumer.acked == []
    row = Call.get_by_id(ids[0])
    assert (row.status, row.attempts) == ("queued", 1)  # charged: a delivery limit counts it


def test_slow_calls_spill_the_rest_of_their_bundle_after_recording_what_ran(store):
    from ectool.store.models import Call

    ids, bodies = calls(4)
    recorded_before_spill = []
    rt = runtime(slow, on_publish=lambda: recorded_before_spill.append(Call.get_by_id(ids[0]).status))
    whole = Delivery(bodies[3], "q.s", 2)
    rt.handle([Delivery(bundle(bodies[:3], 3)[0], "q.s", 1), whole])
    assert rt.executed == [ids[0], ids[3]]  # one bundled call ran, the single one too
    assert [b for _, b, _ in rt.transport.published] == bodies[1:3]  # the rest went out alone
    assert recorded_before_spill == ["done"], "what ran is recorded before the rest is handed back"
    assert rt.paused == [] and rt.deps.crashes.count == 0, "no pause after a spill"
    rows = {r.id: (r.status, r.attempts) for r in Call.select()}
    assert [rows[i] for i in ids] == [("done", 1), ("queued", 0), ("queued", 0), ("done", 1)]
    assert len(rt.consumer.acked) == 2 and all(len(unbundle(d.body)) in (1, 3) for d in rt.consumer.acked)


def test_a_bundle_is_never_returned_whole_so_a_call_waiting_for_its_retry_is_not_run_again(store):
    from ectool.store.models import Call

    ids, bodies = calls(3)

    def fail_then_stop(w, m):
        w.stopping = True  # SIGTERM while the first call runs
        return Result(m, "retrying", error_type="ValueError", error_message="try again", retry_delay=5.0)

    rt = runtime(fail_then_stop, retries=3)
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


def test_a_parked_copy_of_a_redelivered_call_stays_a_redelivery(store):
    from ectool.store.models import Call

    ids, bodies = calls(2)
    Call.update(status="running", attempts=1, host="this-host", worker_pid=99).execute()
    rt = runtime(elsewhere=True)
    rt.handle([Delivery(bodies[0], "q.s", 1, redeliveries=1), Delivery(bodies[1], "q.s", 2, headers={})])
    parked = {b: h for _, b, h in rt.transport.published}
    assert parked[bodies[0]].get(REDELIVERED) == 1, "its flow is recovered by the copy if need be"
    assert REDELIVERED not in parked[bodies[1]]


def test_after_a_spill_the_bundles_still_held_go_out_one_call_to_a_message(store):
    from ectool.store.models import Call

    ids, bodies = calls(6)
    rt = runtime(slow)
    held_bundle, held_single = Delivery(bundle(bodies[3:5], 2)[0], "q.s", 2), Delivery(bodies[5], "q.s", 3)
    rt.handle([Delivery(bundle(bodies[:3], 3)[0], "q.s", 1)])
    assert rt.spilled
    rt.handle([held_bundle, held_single], spread=True)  # what the runtime does with what it holds
    assert rt.executed == [ids[0], ids[5]] and not rt.spilled
    assert [(b, h) for _, b, h in rt.transport.published] == [(b, None) for b in bodies[1:5]]
    assert held_bundle in rt.consumer.acked and held_single in rt.consumer.acked
    rows = {r.id: (r.status, r.attempts) for r in Call.select()}
    assert [rows[i] for i in ids] == [("done", 1), ("queued", 0), ("queued", 0), ("queued", 0), ("queued", 0),
                                      ("done", 1)]


def test_a_held_delivery_is_handed_off_on_time_not_a_poll_later():
    """The RabbitMQ consumer's book of held deliveries (hand_off.HandOff, pure: the clock
    is passed in): the I/O thread wakes when the oldest is due, not a poll later."""
    from ectool.transport.hand_off import HandOff

    d7, d8 = Delivery(b"7", "q", 7), Delivery(b"8", "q", 8)
    held = HandOff(1.0)
    assert held.next_wake(100.0, poll=1.0) == 1.0  # nothing held
    held.hold(7, d7, 99.3)
    held.hold(8, d8, 100.0)
    assert held.next_wake(100.0, poll=1.0) == pytest.approx(0.3)
    assert held.overdue(100.0) == []
    assert held.overdue(100.3) == [(7, 99.3, d7)]  # taken out: handed off once
    assert held.next_wake(100.3, poll=1.0) == pytest.approx(0.7)
    held.settled(8)  # acked before it was due
    assert held.overdue(105.0) == [] and held.next_wake(105.0, poll=1.0) == 1.0
    held.hold(9, d8, 99.0)
    assert held.next_wake(105.0, poll=1.0) == 0.0  # overdue already: at once
    never = HandOff(None)
    never.hold(1, d7, 0.0)
    assert never.overdue(1e9) == [] and never.next_wake(1e9, poll=1.0) == 1.0


def test_a_kept_chain_runs_here_and_its_delivery_is_acked_after_the_last_step(store):
    from ectool.store.models import Call

    ids, bodies = calls(1)
    acked_while_running = []

    def run(w, m):
        acked_while_running.append(len(w.consumer.acked))
        return Result(m, "done", result_json="1", ms=1.0)

    rt = runtime(run, hand_off=4)
    first = Delivery(bodies[0], "q.s", 1)
    rt.handle([first])
    assert len(rt.executed) == 4 and rt.transport.published == [], "kept steps are run, not published"
    assert acked_while_running == [0, 0, 0, 0] and rt.consumer.acked == [first]
    assert [(r.status, r.attempts) for r in Call.select()] == [("done", 1)] * 4


def test_a_kept_step_whose_executor_dies_goes_out_on_its_own_before_the_ack(store):
    from ectool.messages import decode
    from ectool.store.models import Call

    ids, bodies = calls(1)
    acks_at_publish = []

    def die_on_the_kept_step(w, m):
        if m.args[0] == 1:
            raise ExecutorDied("the executor exited")
        return Result(m, "done", result_json="1", ms=1.0)

    rt = runtime(die_on_the_kept_step, hand_off=3, on_publish=lambda: acks_at_publish.append(len(rt.consumer.acked)))
    rt.handle([Delivery(bodies[0], "q.s", 1)])
    [(queue, body, headers)] = rt.transport.published
    kept = decode(body)
    assert (queue, kept.args, headers) == ("q.s", [1], {REDELIVERED: 1})
    assert acks_at_publish == [0] and len(rt.consumer.acked) == 1 and rt.consumer.nacked == []
    row = Call.get_by_id(kept.id)
    assert (row.status, row.attempts) == ("queued", 1)  # charged: a delivery limit counts it
    assert Call.get_by_id(ids[0]).status == "done"


def test_a_stopping_worker_keeps_nothing(store):
    ids, bodies = calls(1)

    def stop(w, m):
        w.stopping = True
        return Result(m, "done", result_json="1", ms=1.0)

    rt = runtime(stop, hand_off=3)
    rt.handle([Delivery(bodies[0], "q.s", 1)])
    assert rt.executed == ids and len(rt.consumer.acked) == 1
