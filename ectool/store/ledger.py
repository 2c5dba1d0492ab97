"""The call ledger: every statement on the ``call`` table, with the dialect switches inside.

The client (:mod:`ectool.calls`), the workflow engine (:mod:`ectool.engine`) and the
worker (:mod:`ectool.worker.runtime`) write and read calls through these functions only, so the
SQL that differs between SQLite and PostgreSQL lives in one place and is tested once on
both (tests/test_ledger.py). Hot statements are raw SQL built once per shape; the rest use
the query builder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import peewee

from ..outcome import Outcome
from .models import FINAL_CALL_STATUS, Call, db, now, on_sqlite

#: the columns :func:`insert_calls` writes by default, in the order of its parameter tuples
INSERT_COLUMNS = ("id", "created", "updated", "socket", "parent", "root", "flow", "status", "attempts", "args",
                  "submitted")
#: the columns of a pipeline step a worker keeps to run itself (written running, under it)
KEPT_COLUMNS = (*INSERT_COLUMNS, "started", "host", "worker_pid")
INSERT_ROWS = 500  # rows per INSERT statement (SQLite allows 32766 parameters, PostgreSQL 65535)
#: what an outcome needs from a call's row (not its arguments or log), in this order
OUTCOME_COLUMNS = ("id", "status", "result", "error_type", "error_message", "traceback", "attempts")
QUOTED_OUTCOME_COLUMNS = tuple(f'"{c}"' for c in OUTCOME_COLUMNS)
#: UPDATE ... RETURNING needs SQLite 3.35, UPDATE ... FROM 3.33 (PostgreSQL has both)
_RETURNING = sqlite3.sqlite_version_info >= (3, 35)
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)


class Recorded(Protocol):
    """What :func:`record_outcomes` reads of one outcome (the worker's ``Result``)."""

    msg: Any  # .id
    status: str
    result_json: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    log: str | None
    started: Any
    finished: Any
    # optional: ``ran_at``, the (processor, commit, runtime) that ran it when not the
    # worker's own (a pinned replay); read with getattr, absent means the claim's


#: a call's provenance: (processor, commit or None, runtime)
Provenance = tuple[str, str | None, str]
PROVENANCE_COLUMNS = ("processor", "commit", "runtime")


# -- submitting ------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)  # the common batch sizes; a long map sees hundreds of sizes
def insert_sql(param: str, n: int, columns: Sequence[str] = INSERT_COLUMNS, ignore_existing: bool = False) -> str:
    """``INSERT INTO "call" (columns) VALUES (...) x n [ON CONFLICT DO NOTHING]``, built
    once per shape (``columns`` a tuple)."""
    row = "(" + ", ".join([param] * len(columns)) + ")"
    quoted = ", ".join(f'"{c}"' for c in columns)
    return (f'INSERT INTO "call" ({quoted}) VALUES {", ".join([row] * n)}'
            + (" ON CONFLICT DO NOTHING" if ignore_existing else ""))


def insert_calls(rows: list[tuple], columns: Sequence[str] = INSERT_COLUMNS, *,
                 ignore_existing: bool = False, first: tuple[str, list] | None = None) -> None:
    """Commit new call rows (tuples of ``columns``): one autocommitted statement (one
    round trip) for up to :data:`INSERT_ROWS` rows, else one transaction. The SQL is built
    once per shape rather than by the query builder for every submit. ``ignore_existing``
    leaves rows whose id exists alone (re-sent workflow steps). ``first``: a statement
    (SQL, parameters) to run before them; on PostgreSQL it travels with them in one simple
    query (one round trip, one implicit transaction)."""
    database = db.obj
    param = database.param

    def execute(chunk: list[tuple], head: tuple[str, list] | None = None) -> None:
        sql = insert_sql(param, len(chunk), tuple(columns), ignore_existing)
        params = [v for row in chunk for v in row]
        if head is not None:
            sql, params = f"{head[0]}; {sql}", [*head[1], *params]
        database.execute_sql(sql, params)

    if first is not None and (on_sqlite() or len(rows) > INSERT_ROWS):
        database.execute_sql(*first)  # SQLite runs one statement at a time
        first = None
    if len(rows) <= INSERT_ROWS:
        execute(rows, first)
        return
    with db.atomic():
        for i in range(0, len(rows), INSERT_ROWS):
            execute(rows[i:i + INSERT_ROWS])


def insert_kept(row: tuple, ran_at: Provenance | None = None) -> bool:
    """Write the row (:data:`KEPT_COLUMNS`) of a step a worker keeps to run itself (at
    ``ran_at``: its provenance); False if the call has a row already (another worker got
    to it first: not to be run here)."""
    columns = (*KEPT_COLUMNS, *PROVENANCE_COLUMNS) if ran_at else KEPT_COLUMNS
    sql = insert_sql(db.obj.param, 1, columns, True)
    return db.execute_sql(sql, [*row, *(ran_at or ())]).rowcount == 1


def workflow_sql(wf: str, plan: str, reply_to: str | None) -> tuple[str, list]:
    """The statement that records a workflow's plan (for ``insert_calls(first=...)``)."""
    p = db.obj.param
    return f'INSERT INTO "workflow" (id, plan, reply_to, created) VALUES ({p}, {p}, {p}, {p})', \
        [wf, plan, reply_to, now()]


def insert_call(ignore_existing: bool = True, **fields: Any) -> None:
    """One new call row (a workflow step, a plug's call); ``created``, ``updated`` and
    ``submitted`` default to now."""
    stamp = now()
    query = Call.insert(**({"submitted": stamp, "created": stamp, "updated": stamp} | fields))
    (query.on_conflict_ignore() if ignore_existing else query).execute()


def mark_replay(call_id: str, of: str) -> None:
    """Link a new call (a replayed workflow's root) to the call it replays."""
    Call.update(replay_of=of).where(Call.id == call_id).execute()


def insert_missing(rows: list[dict[str, Any]]) -> None:
    """Insert call rows (dicts) a worker received before their submitter recorded them."""
    Call.insert_many(rows).on_conflict_ignore().execute()


def cancel_unpublished(ids: list[str], reason: str) -> None:
    """Calls whose messages could not be published: cancelled, with the reason."""
    Call.update(status="cancelled", error_type="PublishFailed", error_message=reason[:500],
                finished=now()).where(Call.id.in_(ids)).execute()


def cancel_many(ids: list[str]) -> int:
    """Cancel the calls among ``ids`` still queued (or waiting to retry); how many were."""
    n = 0
    for i in range(0, len(ids), 500):
        n += Call.update(status="cancelled", finished=now(), updated=now()).where(
            Call.id.in_(ids[i:i + 500]) & Call.status.in_(("queued", "retrying"))).execute()
    return n


def cancel(call_id: str) -> bool:
    """Cancel a call still queued (or waiting to retry); True if it was."""
    return bool(Call.update(status="cancelled", finished=now(), updated=now()).where(
        (Call.id == call_id) & Call.status.in_(("queued", "retrying"))).execute())


# -- reading -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def outcome_sql(param: str, n: int) -> str:
    """``SELECT OUTCOME_COLUMNS FROM "call" WHERE id IN (n parameters)``, built once per size."""
    return f'SELECT {", ".join(QUOTED_OUTCOME_COLUMNS)} FROM "call" WHERE "id" IN ({", ".join([param] * n)})'


def outcomes(ids: Iterable[str]) -> dict[str, Outcome]:
    """Final outcomes recorded in the store for ``ids`` (unfinished ones are absent)."""
    ids = list(ids)
    found: dict[str, Outcome] = {}
    database = db.obj
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        # by id only: with the status in the WHERE clause SQLite picks the status index and
        # scans every finished call in the store. Plain tuples: no model objects.
        cursor = database.execute_sql(outcome_sql(database.param, len(chunk)), chunk)
        for cid, status, result, error_type, error_message, tb, attempts in cursor.fetchall():
            if status in FINAL_CALL_STATUS:
                found[cid] = Outcome(cid, status, error_type=error_type, error_message=error_message, traceback=tb,
                                     attempts=attempts or 0, result_json=result)
    return found


def get(call_id: str) -> Call | None:
    """A call's whole row, or None."""
    return Call.get_or_none(Call.id == call_id)


def claim_rows(ids: list[str]) -> dict[str, Call]:
    """What a worker needs to decide about delivered calls: {id: row (id, status,
    attempts, host, worker_pid)} of those in the store."""
    return {r.id: r for r in Call.select(Call.id, Call.status, Call.attempts, Call.host, Call.worker_pid)
            .where(Call.id.in_(ids))}


def log_of(call_id: str) -> str | None:
    """What a call printed, or None."""
    row = Call.select(Call.log).where(Call.id == call_id).first()
    return row.log if row is not None else None


def select(*, status: str | None = None, socket: str | None = None, since: dt.datetime | None = None,
           limit: int = 100, ids: Sequence[str] | None = None, flow: str | None = None,
           commit: str | None = None) -> list[Call]:
    """Calls matching every filter given, newest first; ``commit`` is a prefix of the
    commit that ran them."""
    query = Call.select().order_by(Call.submitted.desc())
    filters = [(flow, Call.flow == flow), (status, Call.status == status), (socket, Call.socket == socket),
               (since, Call.submitted >= since), (ids, Call.id.in_(list(ids or ()))),
               (commit, Call.commit.startswith(commit or ""))]
    for given, clause in filters:
        if given:
            query = query.where(clause)
    return list(query.limit(limit))


def placements(ids: list[str]) -> list[Call]:
    """Where and when ``ids`` ran: rows (id, host, started, finished)."""
    return list(Call.select(Call.id, Call.host, Call.started, Call.finished).where(Call.id.in_(ids)))


def statuses(ids: list[str]) -> dict[str, Call]:
    """{id: row (id, status, flow)} of ``ids`` in the store."""
    return {r.id: r for r in Call.select(Call.id, Call.status, Call.flow).where(Call.id.in_(ids))}


def family(root: str, flow: bool, with_log: bool = False) -> list[Call]:
    """The calls under ``root`` (and, for a flow, its members), oldest first."""
    where = Call.root == root
    if flow:
        where |= Call.flow == root
    if with_log:
        where &= Call.log.is_null(False)
    return list(Call.select().where(where).order_by(Call.submitted, Call.id))


# -- running -----------------------------------------------------------------------------
def claim_calls(ids: list[str], host: str, pid: int, ran_at: Provenance | None = None) -> dict[str, int]:
    """Mark the queued (or retrying) calls among ``ids`` running on ``host`` under ``pid``
    (at ``ran_at``: processor, commit, runtime), in one statement; return {id: attempts} of
    those claimed. Others (final, running, not yet in the store) need a closer look.

    On PostgreSQL the commit is asynchronous: losing it in a database crash only loses the
    attempt count of a call that then runs again, never an outcome."""
    if not _RETURNING and on_sqlite():
        return {}
    p = db.obj.param
    prov = "".join(f', "{c}" = {p}' for c in PROVENANCE_COLUMNS) if ran_at else ""
    sql = (f"UPDATE \"call\" SET status = 'running', attempts = attempts + 1, started = {p}, updated = {p}, "
           f"host = {p}, worker_pid = {p}{prov} WHERE id IN ({', '.join([p] * len(ids))}) "
           f"AND status IN ('queued', 'retrying') RETURNING id, attempts")
    if not on_sqlite() and not db.in_transaction():
        sql = "SET LOCAL synchronous_commit TO OFF; " + sql
    stamp = now()
    return dict(db.execute_sql(sql, [stamp, stamp, host, pid, *(ran_at or ()), *ids]).fetchall())


def mark_running(ids: list[str], host: str, pid: int, ran_at: Provenance | None = None) -> None:
    """Mark the calls among ``ids`` not yet final running here (one more attempt)."""
    prov = dict(zip(PROVENANCE_COLUMNS, ran_at, strict=True)) if ran_at else {}
    Call.update(status="running", attempts=Call.attempts + 1, started=now(), updated=now(),
                host=host, worker_pid=pid, **prov).where(Call.id.in_(ids) & Call.status.not_in(FINAL_CALL_STATUS)).execute()


def running_on(host: str, pid: int):
    """Calls ``pid`` on ``host`` has marked running (not ones another worker took over since)."""
    return (Call.status == "running") & (Call.host == host) & (Call.worker_pid == pid)


def requeue(ids: list[str], host: str, pid: int, uncharge: bool = True, touch: bool = True) -> None:
    """Calls running under ``pid`` on ``host`` queued again; ``uncharge``: the attempt
    they were charged with is taken back."""
    fields: dict[str, Any] = {"status": "queued"}
    if uncharge:
        fields["attempts"] = Call.attempts - 1
    if touch:
        fields["updated"] = now()
    Call.update(**fields).where(Call.id.in_(ids) & running_on(host, pid)).execute()


def bury(call_id: str, reason: str, error_type: str) -> None:
    """Mark a call not yet final ``dead`` with the reason."""
    Call.update(status="dead", error_type=error_type, error_message=reason, finished=now(), updated=now()
                ).where((Call.id == call_id) & Call.status.not_in(FINAL_CALL_STATUS)).execute()


def close(call_id: str, status: str, **fields: Any) -> bool:
    """Finish a call not yet final (a workflow's root) with ``status`` and ``fields``;
    False if it was final already (left as it was)."""
    return bool(Call.update(status=status, finished=now(), updated=now(), **fields).where(
        (Call.id == call_id) & Call.status.not_in(FINAL_CALL_STATUS)).execute())


class _Begun(peewee._transaction):
    """A transaction whose ``BEGIN`` the caller sends with its first statement."""

    def _begin(self) -> None:
        pass


@contextlib.contextmanager
def recording(results: Sequence[Recorded], roots: Sequence[str] = ()) -> Iterator[dict[str, Call]]:
    """A transaction that starts by recording ``results`` (:func:`record_outcomes`) and
    reading the :func:`statuses` of ``roots`` (their workflows); what the block does
    commits with them. Yields those statuses. On PostgreSQL the ``BEGIN``, the outcomes
    and the read travel as one simple query (one round trip, where a worker recording a
    workflow step made three); a failure there rolls the transaction back as usual."""
    database = db.obj
    if on_sqlite() or database.transaction_depth() or not results:
        with db.atomic():
            record_outcomes(results)
            yield statuses(list(roots)) if roots else {}
        return
    with _Begun(database):
        yield record_outcomes(results, begin=True, roots=roots)


def record_outcomes(results: Sequence[Recorded], begin: bool = False,
                    roots: Sequence[str] = ()) -> dict[str, Call]:
    """Commit every outcome of a batch in one statement (one round trip, one transaction).

    Only calls not yet final are touched, so a redelivered call keeps its first outcome.
    Each call gets its own started and finished times (a batch runs its calls one after
    another), or the batch's end for both when it has none.
    """
    if not results:
        return {}
    p = db.obj.param
    pinned = any(getattr(r, "ran_at", None) for r in results)
    cols: tuple[str, ...] = ("id", "status", "result", "error_type", "error_message", "traceback", "log",
                             *(PROVENANCE_COLUMNS if pinned else ()), "started", "ended")
    rows = ", ".join(f"({', '.join([p] * len(cols))})" for _ in results)
    params: list = []
    stamp = now()
    for r in results:
        params += [r.msg.id, r.status, r.result_json, r.error_type, r.error_message, r.traceback, r.log]
        if pinned:  # a pinned replay ran elsewhere than the claim said (ectool.worker.pinned)
            params += list(getattr(r, "ran_at", None) or (None, None, None))
        params += [r.started or stamp, r.finished or stamp]
    final = ", ".join(f"'{s}'" for s in FINAL_CALL_STATUS)
    quoted = ", ".join(f'"{c}"' for c in cols)
    head = f"WITH v({quoted}) AS (VALUES {rows}) UPDATE \"call\" SET "
    tail = f"updated = {p} "
    if _UPDATE_FROM or not on_sqlite():
        # a join with the values (one lookup per row) rather than a subquery per column
        sets = ", ".join(f'"{c}" = COALESCE(v."{c}", "call"."{c}")' if c in PROVENANCE_COLUMNS
                         else f"{c} = v.{c}" for c in cols[1:-1])
        sql = (f"{head}{sets}, finished = CASE WHEN v.status = 'retrying' THEN NULL ELSE v.ended END, {tail}"
               f"FROM v WHERE \"call\".id = v.id AND \"call\".status NOT IN ({final})")
    else:
        sets = ", ".join(f'"{c}" = COALESCE((SELECT v."{c}" FROM v WHERE v.id = "call".id), "call"."{c}")'
                         if c in PROVENANCE_COLUMNS else f"{c} = (SELECT v.{c} FROM v WHERE v.id = \"call\".id)"
                         for c in cols[1:-1])
        sql = (f"{head}{sets}, finished = (SELECT CASE WHEN v.status = 'retrying' THEN NULL ELSE v.ended END "
               f"FROM v WHERE v.id = \"call\".id), {tail}"
               f"WHERE id IN (SELECT id FROM v) AND status NOT IN ({final})")
    # one statement: atomic on its own (``begin``: it also opens the caller's transaction,
    # and ``roots``: the statuses of these calls are read after it, in the same query)
    if not begin:
        db.execute_sql(sql, [*params, stamp])
        return {}
    read = f'; SELECT id, status, flow FROM "call" WHERE id IN ({", ".join([p] * len(roots))})' if roots else ""
    cursor = db.execute_sql(f"BEGIN; {sql}{read}", [*params, stamp, *roots])
    return {r[0]: Call(id=r[0], status=r[1], flow=r[2]) for r in cursor.fetchall()} if roots else {}


# -- workflows ---------------------------------------------------------------------------
@contextlib.contextmanager
def locked(key: str) -> Iterator[None]:
    """A transaction that serializes writers on ``key`` (a fan-in's call id): SQLite takes
    its write lock up front, PostgreSQL an advisory lock on the key."""
    sqlite = on_sqlite()
    with db.atomic(**({"lock_type": "IMMEDIATE"} if sqlite else {})):
        if not sqlite:
            db.execute_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
        yield


def join_node(node: str) -> Any:
    """A parallel node's row (id, status) in a transaction: locked on PostgreSQL (SQLite's
    transaction holds the write lock already)."""
    query = Call.select(Call.id, Call.status).where(Call.id == node)
    return (query if on_sqlite() else query.for_update()).first()


def joining(node: str):
    """The transaction for a join on ``node``: SQLite's write lock up front, a plain
    transaction on PostgreSQL (:func:`join_node` locks the row)."""
    return db.atomic(**({"lock_type": "IMMEDIATE"} if on_sqlite() else {}))


# -- pipelined submits (ectool.submitter) ------------------------------------------------
#: the ``host`` of a row a submitter has committed but not yet published:
#: ``submitting:HOST:PID:START`` (START, the process's start time, tells a reused pid apart)
SUBMITTING = "submitting:"


def untag(ids: list[str], tag: str) -> None:
    """Published: clear the submitter's tag on the rows among ``ids`` still carrying it
    (a worker that claimed one already wrote its own host there)."""
    for i in range(0, len(ids), INSERT_ROWS):
        Call.update(host=None).where(Call.id.in_(ids[i:i + INSERT_ROWS]) & (Call.host == tag)).execute()


def submitting(host: str) -> list[Call]:
    """Queued rows still tagged by a submitter on ``host`` (committed, perhaps never
    published). Only queued ones: a worker that claims a call writes its own host over
    the tag, and the status index keeps this from reading the whole table (it runs at
    every submitter's start and in every agent's loop)."""
    return list(Call.select(Call.id, Call.socket, Call.parent, Call.root, Call.flow, Call.args, Call.host,
                            Call.status)
                .where((Call.status == "queued") & Call.host.startswith(f"{SUBMITTING}{host}:"))
                .order_by(Call.submitted, Call.id))
