"""The call ledger (ectool.store.ledger): every statement on the ``call`` table, run on
SQLite and PostgreSQL alike (the ``db_url`` fixture), as users see their effect: rows,
statuses, attempts, outcomes."""

from __future__ import annotations

import json
import uuid

import pytest

from ectool.store import ledger


def _open(db_url):
    from ectool.store import open_store

    return open_store(db_url)


def test_insert_calls_writes_what_the_query_builder_wrote(db_url):
    from ectool.store.models import Call, now

    _open(db_url)
    stamp = now()
    ref = str(uuid.uuid4())
    Call.insert_many([{"id": ref, "socket": "s", "root": ref, "parent": "p", "flow": None, "status": "queued",
                       "args": '{"args":[1],"kwargs":{}}', "submitted": stamp, "created": stamp,
                       "updated": stamp}]).execute()
    ids = [str(uuid.uuid4()) for _ in range(ledger.INSERT_ROWS * 2 + 3)]  # several statements, one transaction
    ledger.insert_calls([(cid, stamp, stamp, "s", "p", ids[0], None, "queued", 0, '{"args":[1],"kwargs":{}}', stamp)
                        for cid in ids])
    assert Call.select().where(Call.id.in_(ids)).count() == len(ids)
    want = Call.get_by_id(ref).__data__
    got = Call.get_by_id(ids[1]).__data__
    for key in want:
        if key not in ("id", "root"):
            assert got[key] == want[key], key
    assert got["root"] == ids[0]


def test_outcomes_reads_final_calls_only(db_url):
    from ectool.store.models import Call, now

    _open(db_url)
    stamp = now()
    ids = [str(uuid.uuid4()) for _ in range(ledger.INSERT_ROWS + 7)]
    ledger.insert_calls([(cid, stamp, stamp, "s", None, cid, None, "queued", 0, "{}", stamp) for cid in ids])
    Call.update(status="done", result=json.dumps({"$bytes": "AAE="}), attempts=1).where(Call.id == ids[0]).execute()
    Call.update(status="failed", error_type="ValueError", error_message="boom", traceback="tb",
                attempts=3).where(Call.id == ids[-1]).execute()
    Call.update(status="running").where(Call.id == ids[1]).execute()
    found = ledger.outcomes(ids + ["no-such-call"])
    assert set(found) == {ids[0], ids[-1]}
    assert found[ids[0]].ok and found[ids[0]].result == b"\x00\x01" and found[ids[0]].attempts == 1
    bad = found[ids[-1]]
    assert (bad.status, bad.error_type, bad.error_message, bad.traceback, bad.attempts) == \
        ("failed", "ValueError", "boom", "tb", 3)
    assert bad.result is None and bad.result_json is None


@pytest.mark.parametrize("update_from", [True, False], ids=["update-from", "subqueries"])
def test_record_outcomes_keeps_the_first_outcome(db_url, update_from, monkeypatch):
    """A batch's outcomes in one statement (UPDATE ... FROM, or a subquery per column where
    SQLite is older than 3.33): final calls are left alone, a retry clears ``finished``."""
    from ectool.messages import CallMessage
    from ectool.store.models import Call, now
    from ectool.worker.result import Result

    monkeypatch.setattr(ledger, "_UPDATE_FROM", update_from)
    _open(db_url)
    stamp = now()
    ids = [str(uuid.uuid4()) for _ in range(4)]
    ledger.insert_calls([(cid, stamp, stamp, "s", None, cid, None, "running", 1, "{}", stamp) for cid in ids])
    Call.update(status="done", result="1", finished=stamp).where(Call.id == ids[3]).execute()

    def result(cid, status, **fields):
        return Result(CallMessage(id=cid, socket="s", task="t"), status, **fields)

    ledger.record_outcomes([result(ids[0], "done", result_json='"ok"', log="printed"),
                            result(ids[1], "failed", error_type="ValueError", error_message="boom", traceback="tb"),
                            result(ids[2], "retrying", error_type="KeyError"),
                            result(ids[3], "done", result_json="2")])
    rows = {r.id: r for r in Call.select().where(Call.id.in_(ids))}
    assert (rows[ids[0]].status, rows[ids[0]].result, rows[ids[0]].log) == ("done", '"ok"', "printed")
    assert rows[ids[0]].finished is not None
    assert (rows[ids[1]].status, rows[ids[1]].error_type, rows[ids[1]].error_message, rows[ids[1]].traceback) == \
        ("failed", "ValueError", "boom", "tb")
    assert (rows[ids[2]].status, rows[ids[2]].error_type, rows[ids[2]].finished) == ("retrying", "KeyError", None)
    assert (rows[ids[3]].status, rows[ids[3]].result) == ("done", "1")  # its first outcome stays


def test_recording_commits_outcomes_with_what_follows_them_or_neither(db_url):
    """A worker's outcomes and the rows its flows start commit together (on PostgreSQL
    the transaction's BEGIN goes with the outcomes' statement); a failure in between
    leaves neither."""
    from ectool.messages import CallMessage
    from ectool.store.models import Call, now
    from ectool.worker.result import Result

    _open(db_url)
    stamp = now()
    ids = [str(uuid.uuid4()) for _ in range(4)]
    ledger.insert_calls([(cid, stamp, stamp, "s", None, cid, None, "running", 1, "{}", stamp) for cid in ids[:2]])

    def done(cid):
        return Result(CallMessage(id=cid, socket="s", task="t"), "done", result_json="1")

    with ledger.recording([done(ids[0])], [ids[0], ids[1], "no-such-call"]) as roots:
        ledger.insert_calls([(ids[2], stamp, stamp, "s", None, ids[2], None, "running", 1, "{}", stamp)])
    assert {k: v.status for k, v in roots.items()} == {ids[0]: "done", ids[1]: "running"}  # read after recording
    assert _row(ids[0]).status == "done" and _row(ids[2]).status == "running"
    with pytest.raises(RuntimeError), ledger.recording([done(ids[1])]):
        ledger.insert_calls([(ids[3], stamp, stamp, "s", None, ids[3], None, "running", 1, "{}", stamp)])
        raise RuntimeError("the worker's flow step failed")
    assert _row(ids[1]).status == "running" and _row(ids[3]) is None
    assert Call.select().count() == 3  # and the connection is usable again


def test_a_workflow_plan_and_its_first_rows_are_written_together(db_url):
    from ectool.store.models import Call, Workflow, now

    _open(db_url)
    stamp = now()
    wf, step = str(uuid.uuid4()), str(uuid.uuid4())
    ledger.insert_calls([(wf, stamp, stamp, "pipeline", None, wf, None, "running", 0, None, stamp),
                         (step, stamp, stamp, "s", wf, wf, None, "queued", 0, "{}", stamp)],
                        first=ledger.workflow_sql(wf, '{"t": "pipe"}', "inbox"))
    assert (Workflow.get_by_id(wf).plan, Workflow.get_by_id(wf).reply_to) == ('{"t": "pipe"}', "inbox")
    assert {r.id for r in Call.select()} == {wf, step}


def test_a_kept_step_is_written_once(db_url):
    from ectool.store.models import now

    _open(db_url)
    stamp = now()
    cid = str(uuid.uuid4())
    row = (cid, stamp, stamp, "s", None, cid, None, "running", 1, "{}", stamp, stamp, "this-host", 42)
    assert ledger.insert_kept(row) is True
    assert ledger.insert_kept(row[:12] + ("other-host", 7)) is False
    assert (_row(cid).host, _row(cid).worker_pid, _row(cid).status) == ("this-host", 42, "running")


def _queued(n, status="queued", attempts=0):
    from ectool.store.models import now

    stamp = now()
    ids = [str(uuid.uuid4()) for _ in range(n)]
    ledger.insert_calls([(cid, stamp, stamp, "s", None, cid, None, status, attempts, "{}", stamp) for cid in ids])
    return ids


def _row(cid):
    return ledger.get(cid)


def test_claim_marks_queued_calls_running_here_once(db_url):
    _open(db_url)
    ids = _queued(3)
    ledger.bury(ids[2], "gone", "DeliveryLimit")
    claimed = ledger.claim_calls(ids, "h1", 42)
    if not ledger._RETURNING and db_url.startswith("sqlite"):
        assert claimed == {}  # too old a SQLite: the worker marks them one by one instead
        return
    assert claimed == {ids[0]: 1, ids[1]: 1}
    assert ledger.claim_calls(ids, "h2", 7) == {}  # running or final: not claimed twice
    row = _row(ids[0])
    assert (row.status, row.attempts, row.host, row.worker_pid) == ("running", 1, "h1", 42)
    rows = ledger.claim_rows(ids)
    assert {cid: r.status for cid, r in rows.items()} == {ids[0]: "running", ids[1]: "running", ids[2]: "dead"}


def test_mark_running_then_requeue_gives_the_attempt_back_only_for_this_worker(db_url):
    _open(db_url)
    ids = _queued(2)
    ledger.mark_running(ids, "h1", 42)
    ledger.requeue([ids[0]], "h1", 41)  # another pid: not ours, untouched
    assert _row(ids[0]).status == "running"
    ledger.requeue([ids[0]], "h1", 42)
    ledger.requeue([ids[1]], "h1", 42, uncharge=False)
    assert (_row(ids[0]).status, _row(ids[0]).attempts) == ("queued", 0)
    assert (_row(ids[1]).status, _row(ids[1]).attempts) == ("queued", 1)


def test_insert_missing_leaves_existing_rows_alone(db_url):
    _open(db_url)
    (cid,) = _queued(1, status="done", attempts=1)
    new = str(uuid.uuid4())
    ledger.insert_missing([{"id": cid, "socket": "s", "root": cid, "status": "queued", "attempts": 0, "args": "{}"},
                           {"id": new, "socket": "s", "root": new, "status": "queued", "attempts": 0, "args": "{}"}])
    assert _row(cid).status == "done" and _row(new).status == "queued"


def test_bury_close_and_cancel_touch_unfinished_calls_only(db_url):
    _open(db_url)
    ids = _queued(4)
    ledger.bury(ids[0], "delivery limit", "DeliveryLimit")
    ledger.bury(ids[0], "again", "Other")
    row = _row(ids[0])
    assert (row.status, row.error_type, row.error_message) == ("dead", "DeliveryLimit", "delivery limit")
    assert row.finished is not None
    ledger.close(ids[1], "done", result="[1, 2]")
    ledger.close(ids[1], "failed", error_type="X")
    assert (_row(ids[1]).status, _row(ids[1]).result) == ("done", "[1, 2]")
    assert ledger.cancel(ids[2]) and not ledger.cancel(ids[1])
    assert ledger.cancel_many(ids) == 1  # only ids[3] was still queued
    ledger.cancel_unpublished([ids[3]], "broker down")
    assert (_row(ids[3]).error_type, _row(ids[3]).error_message) == ("PublishFailed", "broker down")


def test_insert_call_and_family_and_select(db_url):
    _open(db_url)
    root = str(uuid.uuid4())
    ledger.insert_call(False, id=root, socket="flow", root=root, flow=root, status="running", args="{}")
    ledger.insert_call(id=root, socket="other", root=root, status="queued", args="{}")  # exists: ignored
    kid = str(uuid.uuid4())
    ledger.insert_call(id=kid, socket="s", root=str(uuid.uuid4()), flow=root, parent=root, status="queued",
                       args="{}")
    ledger.close(kid, "done", log="printed")
    assert _row(root).socket == "flow"
    assert [c.id for c in ledger.family(root, flow=True)] == [root, kid]
    assert [c.id for c in ledger.family(root, flow=False)] == [root]
    assert [c.id for c in ledger.family(root, flow=True, with_log=True)] == [kid]
    assert ledger.log_of(kid) == "printed" and ledger.log_of("no-such-call") is None
    assert [c.id for c in ledger.select(flow=root, status="done")] == [kid]
    assert {c.id for c in ledger.select(ids=[root, kid])} == {root, kid}
    assert {r.id: r.status for r in ledger.statuses([root, kid]).values()} == {root: "running", kid: "done"}
    assert [r.id for r in ledger.placements([kid])] == [kid]


def test_a_join_reads_its_node_and_a_fan_in_serializes_on_its_key(db_url):
    _open(db_url)
    (node,) = _queued(1)
    with ledger.joining(node):
        assert ledger.join_node(node).status == "queued"
        ledger.close(node, "done", result="[]")
    with ledger.locked("fan-in-key"):
        assert ledger.get(node).status == "done"
    assert ledger.join_node("no-such-node") is None


@pytest.mark.parametrize("update_from", [True, False], ids=["update-from", "subqueries"])
def test_claim_and_outcome_record_the_code_that_ran_each_call(db_url, update_from, monkeypatch):
    """Provenance: a claim records the worker's processor, commit and runtime; an outcome
    that ran elsewhere (a pinned replay) records its own; one that says nothing keeps the
    claim's. ``ledger.select(commit=PREFIX)`` finds them. (``subqueries``: the statement
    for a SQLite older than 3.33.)"""
    from ectool.messages import CallMessage
    from ectool.worker.result import Result

    if not update_from and db_url.startswith("sqlite"):  # PostgreSQL always has UPDATE ... FROM
        monkeypatch.setattr(ledger, "_UPDATE_FROM", False)
    _open(db_url)
    ids = _queued(3)
    at_b = ("p", "b" * 40, "python")
    if not ledger.claim_calls(ids[:2], "h1", 42, at_b):
        ledger.mark_running(ids[:2], "h1", 42, at_b)
    ledger.mark_running(ids[2:], "h1", 42, at_b)
    assert (_row(ids[0]).processor, _row(ids[0]).commit, _row(ids[0]).runtime) == at_b
    ledger.record_outcomes([
        Result(CallMessage(id=ids[0], socket="s", task="t"), "done", result_json="1"),
        Result(CallMessage(id=ids[1], socket="s", task="t"), "done", result_json="2", ran_at=("p", "a" * 40, "python"))])
    assert (_row(ids[0]).status, _row(ids[0]).commit) == ("done", "b" * 40)
    assert (_row(ids[1]).status, _row(ids[1]).commit) == ("done", "a" * 40)
    assert [c.id for c in ledger.select(commit="aaaa", ids=ids)] == [ids[1]]
    assert {c.id for c in ledger.select(commit="bbb", ids=ids)} == {ids[0], ids[2]}
