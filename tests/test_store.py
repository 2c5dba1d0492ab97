"""The model store on SQLite and PostgreSQL: constraints, transactions, schema versions."""

from __future__ import annotations

import pytest
from peewee import IntegrityError

from ectool import network
from ectool.errors import Conflict, NotFound, Unreachable, UsageError
from ectool.store import open_store, schema
from ectool.store.models import Call, Processor, Queue, Socket, db


@pytest.fixture
def store(db_url):
    database = open_store(db_url)
    yield database
    database.close()


def seed_network():
    network.add_queue("pyfi.queue1", "direct")
    network.add_processor("proc1", "https://github.com/radiantone/pyfi-processors", "pyfi.processors.sample")
    network.add_socket("pyfi.processors.sample.do_something", "pyfi.queue1", "proc1", "do_something", concurrency=5)


def test_seed_network_is_stored(store):
    seed_network()
    sock = Socket.get(Socket.name == "pyfi.processors.sample.do_something")
    assert (sock.processor.name, sock.queue.name, sock.task, sock.concurrency) == \
        ("proc1", "pyfi.queue1", "do_something", 5)
    assert [r["name"] for r in network.list_objects("processors")] == ["proc1"]


def test_database_enforces_constraints(store):
    seed_network()
    with pytest.raises(IntegrityError), db.atomic():
        Queue.create(name="bad", type="broadcast")  # CHECK on the enum
    with pytest.raises(IntegrityError), db.atomic():
        Processor.create(name="p2", gitrepo="x", module="m", concurrency=0)
    with pytest.raises(IntegrityError), db.atomic():
        Call.create(id="c1", socket="s", root="c1", status="lost")
    with pytest.raises(IntegrityError), db.atomic():
        Socket.create(name="orphan", processor=9999, queue=9999, task="t")  # foreign keys


def test_library_errors(store):
    seed_network()
    with pytest.raises(Conflict, match="already exists"):
        network.add_queue("pyfi.queue1")
    with pytest.raises(NotFound):
        network.add_socket("s2", "no-such-queue", "proc1", "f")
    with pytest.raises(UsageError, match="concurrency"):
        network.add_processor("p", "g", "m", concurrency=0)
    with pytest.raises(UsageError, match="module"):
        network.add_processor("p", "g", "not a module")


def test_failed_multi_step_change_leaves_nothing(store):
    network.add_trust("x")
    with pytest.raises(UsageError):
        network.add_role("ops", ["RUN_TASK", "NOT_A_PRIVILEGE"])
    assert [r["name"] for r in network.list_objects("roles")] == ["admin"]  # no "ops", half-made


def test_delete_refuses_to_orphan_then_cascades(store):
    seed_network()
    with pytest.raises(UsageError, match="--cascade"):
        network.delete("processor", "proc1")
    gone = network.delete("processor", "proc1", cascade=True)
    assert "socket pyfi.processors.sample.do_something" in gone
    assert Socket.select().count() == 0 and Queue.select().count() == 1


def test_update_and_request_status(store):
    seed_network()
    network.update("processor", "proc1", {"concurrency": "4", "branch": "dev"})
    network.request_status("proc1", "pause")
    p = Processor.get(Processor.name == "proc1")
    assert (p.concurrency, p.branch, p.requested_status) == (4, "dev", "paused")
    with pytest.raises(UsageError, match="cannot update"):
        network.update("processor", "proc1", {"name": "x"})
    with pytest.raises(UsageError):
        network.update("processor", "proc1", {"concurrency": "-1"})


def since(version: int) -> list[int]:
    """The versions an upgrade from ``version`` passes through."""
    return list(range(version + 1, schema.CURRENT + 1))


def back_to_v10(database) -> None:
    """Undo v11 on a current store: calls record no provenance."""
    from playhouse.migrate import migrate

    m = schema._migrator(database)
    with schema.foreign_keys_off(database):
        migrate(m.drop_index("call", "call_commit"), m.drop_index("call", "call_replay_of"),
                *[m.drop_column("call", name) for name in schema.PROVENANCE])
    schema.SchemaVersion.update(version=10).execute()


def back_to_v9(database) -> None:
    """Undo v11 and v10 on a current store: no named streams."""
    from ectool.store.streams import STREAM_MODELS

    back_to_v10(database)
    database.drop_tables(STREAM_MODELS)
    schema.SchemaVersion.update(version=9).execute()


def back_to_v8(database) -> None:
    """Undo v10 and v9 on a current store: schedules name a socket, no grace, no named workflows."""
    from playhouse.migrate import migrate

    from ectool.store.schedules import NamedWorkflow

    back_to_v9(database)
    database.drop_tables([NamedWorkflow])
    m = schema._migrator(database)
    with schema.foreign_keys_off(database):
        migrate(m.drop_column("schedule", "workflow"), m.drop_column("schedule", "grace"),
                m.add_not_null("schedule", "socket"))
    schema.SchemaVersion.update(version=8).execute()


def back_to_v7(database) -> None:
    """Undo v9 and v8 on a current store: workers may be paused, stopping or crashed again."""
    from ectool.store.models import WORKER_STATUS

    back_to_v8(database)
    schema._set_check(database, "worker", "status", WORKER_STATUS, schema.WORKER_STATUS_V5)
    schema.SchemaVersion.update(version=7).execute()


def back_to_v5(database) -> None:
    """Undo v8, v7 and v6 on a current store: no schedule tables; processor.branch NOT NULL,
    no deployed_* columns."""
    from playhouse.migrate import migrate

    from ectool.store.schedules import SCHEDULE_MODELS

    back_to_v7(database)
    database.drop_tables(SCHEDULE_MODELS)
    Processor.update(branch="main").where(Processor.branch.is_null()).execute()
    m = schema._migrator(database)
    with schema.foreign_keys_off(database):
        migrate(m.drop_column("processor", "deployed_branch"), m.drop_column("processor", "deployed_commit"),
                m.add_not_null("processor", "branch"))
    schema.SchemaVersion.update(version=5).execute()


def test_schema_version_and_upgrade_from_v1(db_url):
    """A version-1 store (no processor.status_reason, no call.flow, no workflow tables)
    upgrades step by step with data intact."""
    from playhouse.migrate import migrate

    database = open_store(db_url)
    seed_network()
    back_to_v5(database)
    m = schema._migrator(database)
    migrate(m.drop_index("call", "call_flow"), m.drop_column("call", "flow"),
            m.drop_column("processor", "status_reason"), m.drop_index("call", "call_finished"))
    database.drop_tables([schema.Workflow, schema.JoinSlot, schema.MinuteStat])
    as_v4(database)
    schema.SchemaVersion.update(version=1).execute()
    with pytest.raises(UsageError, match="ec db migrate"):
        schema.ensure(database)
    assert schema.upgrade(database) == since(1)
    assert schema.version(database) == schema.CURRENT
    assert database.table_exists("workflow") and database.table_exists("join_slot")
    assert database.table_exists("minute_stat")
    p = Processor.get(Processor.name == "proc1")
    assert p.status_reason is None and p.gitrepo.endswith("pyfi-processors")
    Call.create(id="c", socket="s", root="c", flow="f")
    assert schema.upgrade(database) == []
    database.close()


def test_upgrade_from_v3_adds_minute_stats_and_keeps_calls(db_url):
    """v3 -> v4: the per-minute stats table and the index on call.finished appear; the
    calls stay, and roll up afterwards."""
    import datetime as dt

    from playhouse.migrate import migrate

    from ectool import metrics
    from ectool.store.models import MinuteStat, now

    database = open_store(db_url)
    seed_network()
    t = metrics.floor_minute(now()) - dt.timedelta(minutes=5)
    Call.insert_many([dict(id=f"c{i}", socket="s", root=f"c{i}", status="done", submitted=t,
                           started=t, finished=t + dt.timedelta(seconds=1)) for i in range(3)]).execute()
    back_to_v5(database)
    migrate(schema._migrator(database).drop_index("call", "call_finished"))
    database.drop_tables([MinuteStat])
    as_v4(database)
    schema.SchemaVersion.update(version=3).execute()
    assert "call_finished" not in {i.name for i in database.get_indexes("call")}
    with pytest.raises(UsageError, match=f"is version 3, this ec needs {schema.CURRENT}"):
        schema.ensure(database)
    assert schema.upgrade(database) == since(3)
    schema.ensure(database)
    assert "call_finished" in {i.name for i in database.get_indexes("call")}
    assert Call.select().count() == 3 and Processor.get(Processor.name == "proc1").module == "pyfi.processors.sample"
    assert metrics.rollup() > 0
    row = MinuteStat.get((MinuteStat.minute == t) & (MinuteStat.socket == "s"))
    assert (row.submitted, row.done, row.timed) == (3, 3, 3)
    assert schema.upgrade(database) == []
    database.close()


def as_v4(database) -> None:
    """Take a fresh store's v5 additions away (node state and load, the 'lost' statuses)."""
    from ectool.store.models import AGENT_STATUS

    for column in ("state", "load1"):
        database.execute_sql(f"ALTER TABLE node DROP COLUMN {column}")
    schema._set_check(database, "agent", "status", AGENT_STATUS, AGENT_STATUS[:-1])
    v5 = schema.WORKER_STATUS_V5
    schema._set_check(database, "worker", "status", v5, v5[:-1])


def test_upgrade_from_v4_adds_node_state_and_lost(db_url):
    """v4 -> v5: nodes get a state (schedulable) and a load; agents and workers may be
    marked lost, which v4's CHECKs refused; the rows stay."""
    from peewee import IntegrityError

    from ectool.store.models import Agent, Node, Worker

    database = open_store(db_url)
    seed_network()
    node = Node.insert(name="h1", cpus=2).execute()
    agent = Agent.insert(name="a1", node=node, status="online").execute()
    worker = Worker.insert(processor=Processor.get(Processor.name == "proc1"), host="h1", pid=1,
                           status="running", agent=agent).execute()
    back_to_v5(database)
    with database.atomic():
        as_v4(database)
        schema.SchemaVersion.update(version=4).execute()
    with pytest.raises(IntegrityError), database.atomic():
        Worker.update(status="lost").where(Worker.id == worker).execute()
    assert schema.upgrade(database) == since(4)
    Worker.update(status="lost").where(Worker.id == worker).execute()
    Agent.update(status="lost").where(Agent.id == agent).execute()
    n = Node.get_by_id(node)
    assert (n.state, n.load1, n.cpus) == ("schedulable", None, 2)
    with pytest.raises(IntegrityError), database.atomic():
        Node.update(state="gone").execute()
    with pytest.raises(IntegrityError), database.atomic():
        Worker.update(status="vanished").execute()


def test_upgrade_from_v5_lets_a_processor_follow_the_repository_head(db_url):
    """v5 -> v6: an existing processor keeps its branch; a new one may leave it null (the
    repository's default branch) and the deployed branch and commit are recorded."""
    database = open_store(db_url)
    seed_network()
    Processor.update(branch="main").execute()
    back_to_v5(database)
    with pytest.raises(UsageError, match=f"is version 5, this ec needs {schema.CURRENT}"):
        schema.ensure(database)
    assert schema.upgrade(database) == since(5)
    assert database.table_exists("schedule_tick")
    assert Processor.get(Processor.name == "proc1").branch == "main"
    Processor.update(branch=None, deployed_branch="master", deployed_commit="ab" * 20).execute()
    p = Processor.get(Processor.name == "proc1")
    assert (p.branch, p.deployed_branch, p.deployed_commit) == (None, "master", "ab" * 20)
    database.close()


def test_upgrade_from_v7_drops_the_worker_statuses_nothing_set(db_url):
    """v7 -> v8: a worker can no longer be paused, stopping or crashed (nothing set them);
    a row holding one (by hand) becomes stopped, the others stay as they were."""
    from ectool.store.models import Worker

    database = open_store(db_url)
    seed_network()
    proc = Processor.get(Processor.name == "proc1")
    back_to_v7(database)
    ids = {status: Worker.insert(processor=proc, host="h1", pid=pid, status=status).execute()
           for pid, status in enumerate(schema.WORKER_STATUS_V5)}
    with pytest.raises(UsageError, match=f"is version 7, this ec needs {schema.CURRENT}"):
        schema.ensure(database)
    assert schema.upgrade(database) == since(7)
    shown = {status: Worker.get_by_id(i).status for status, i in ids.items()}
    assert shown == {"starting": "starting", "running": "running", "paused": "stopped",
                     "stopping": "stopped", "stopped": "stopped", "crashed": "stopped", "lost": "lost"}
    for refused in ("paused", "stopping", "crashed"):
        with pytest.raises(IntegrityError), database.atomic():
            Worker.update(status=refused).where(Worker.id == ids["running"]).execute()
    assert schema.upgrade(database) == []
    database.close()


def test_fresh_store_has_the_v4_tables_and_index(store):
    assert schema.version(store) == schema.CURRENT == 11
    assert store.table_exists("minute_stat")
    assert "call_finished" in {i.name for i in store.get_indexes("call")}
    unique = [i for i in store.get_indexes("minute_stat") if i.unique and i.columns == ["minute", "socket"]]
    assert unique, store.get_indexes("minute_stat")


def test_drop_removes_everything(store):
    seed_network()
    schema.drop(store)
    assert schema.version(store) is None
    assert not store.table_exists("processor")


def test_unreachable_postgres_is_exit_3():
    with pytest.raises(Unreachable) as info:
        open_store("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=1")
    assert info.value.exit_code == 3


def test_an_outcome_the_store_refuses_is_recorded_as_failed_not_retried(store):
    """One bad outcome in a batch (here a status its CHECK refuses) does not take the
    others down with it, and is recorded as failed (RecordFailed) with the store's reason:
    the worker must not die on it and run the call again and again."""
    from ectool.messages import CallMessage
    from ectool.store.ledger import INSERT_COLUMNS, insert_calls
    from ectool.store.models import now
    from ectool.worker.result import Result, record_or_refuse

    stamp = now()
    ids = ["c-good", "c-bad", "c-long"]
    insert_calls([(cid, stamp, stamp, "s", None, cid, None, "running", 1, "{}", stamp) for cid in ids],
                 INSERT_COLUMNS)
    msg = {cid: CallMessage(id=cid, socket="s", task="t") for cid in ids}
    results = [Result(msg["c-good"], "done", result_json="1", log="fine"),
               Result(msg["c-bad"], "bogus", result_json="2", log="lost"),
               Result(msg["c-long"], "failed", error_type="E" * 300, error_message="long type")]
    record_or_refuse(results)
    rows = {c.id: c for c in Call.select().where(Call.id.in_(ids))}
    assert (rows["c-good"].status, rows["c-good"].result, rows["c-good"].log) == ("done", "1", "fine")
    bad = rows["c-bad"]
    assert (bad.status, bad.error_type, bad.result, bad.log) == ("failed", "RecordFailed", None, None)
    assert "refused" in bad.error_message and results[1].status == "failed"  # replies and events say so too
    assert rows["c-long"].status == "failed" and rows["c-long"].error_type == "E" * 255


def test_a_sqlite_transaction_that_reads_then_writes_waits_for_another_writer(tmp_path):
    """`ec update` reads the object, then writes it, in one transaction. While another
    connection holds the write lock and then commits, it must wait its turn (BEGIN
    IMMEDIATE), not fail at once with "database is locked" (a deferred transaction whose
    snapshot went stale cannot be retried by SQLite's busy timeout)."""
    import sqlite3
    import subprocess
    import sys
    import time

    from helpers import env_for

    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    open_store(db_url)
    seed_network()
    db.close()
    other = sqlite3.connect(tmp_path / "ec.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE processor SET concurrency = 2")
    env = env_for(db_url, f"sqlite:///{tmp_path / 'queue.db'}")
    update = subprocess.Popen([sys.executable, "-m", "ectool", "update", "processor", "proc1", "concurrency=3"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # it has started, read (WAL lets it) and is waiting to write
        other.execute("COMMIT")
        out, err = update.communicate(timeout=60)
    finally:
        update.kill()
        update.wait()
        other.close()
    assert update.returncode == 0, err
    open_store(db_url)
    assert Processor.get(Processor.name == "proc1").concurrency == 3


def test_a_store_error_no_command_expected_is_one_line_not_a_traceback(tmp_path):
    import subprocess
    import sys

    from helpers import env_for

    garbage = tmp_path / "ec.db"
    garbage.write_bytes(bytes(range(256)) * 20)
    env = env_for(f"sqlite:///{garbage}", f"sqlite:///{tmp_path / 'queue.db'}")
    for argv in (["run", "x"], ["run", "x", "--timeout", "1"], ["ls", "sockets"]):
        done = subprocess.run([sys.executable, "-m", "ectool", *argv], env=env, capture_output=True, text=True,
                              timeout=60)
        assert (done.returncode, done.stderr) == (3, "ec: store error: file is not a database\n"), argv
    assert garbage.read_bytes() == bytes(range(256)) * 20  # and it was left alone


def test_upgrade_from_v8_lets_a_schedule_start_a_workflow(db_url):
    """v8 -> v9: schedules keep their rows and ticks; socket may be null (a workflow
    schedule), a schedule may set its own grace, and named workflows are kept."""
    from ectool import schedules, workflow_defs
    from ectool.store.schedules import Schedule, ScheduleTick

    database = open_store(db_url)
    seed_network()
    kept = schedules.add("kept", "pyfi.processors.sample.do_something", every="1m")
    ScheduleTick.create(schedule=kept.id, tick=kept.next_tick, call="c1")
    back_to_v8(database)
    with pytest.raises(UsageError, match=f"is version 8, this ec needs {schema.CURRENT}"):
        schema.ensure(database)
    assert schema.upgrade(database) == since(8)
    row = Schedule.get(Schedule.name == "kept")
    assert (row.socket, row.workflow, row.grace) == ("pyfi.processors.sample.do_something", None, None)
    assert ScheduleTick.select().where(ScheduleTick.schedule == row.id).count() == 1
    workflow_defs.define("w", workflow_defs.to_plan({"pipeline": ["pyfi.processors.sample.do_something"]}))
    wf = schedules.add("wf", workflow="w", every="1m", grace="30s")
    assert (wf.socket, wf.workflow, wf.grace) == (None, "w", 30.0)
    database.close()


def test_upgrade_from_v9_keeps_named_streams(db_url):
    """v9 -> v10: the stream tables appear (ec map --name, ec attach); nothing else changes."""
    from ectool.store import streams

    database = open_store(db_url)
    seed_network()
    back_to_v9(database)
    assert not database.table_exists("stream")
    with pytest.raises(UsageError, match=f"is version 9, this ec needs {schema.CURRENT}"):
        schema.ensure(database)
    assert schema.upgrade(database) == since(9)
    row = streams.create("big", "pyfi.processors.sample.do_something", "{}", "h", 1)
    streams.add_lines(row.id, 1, [b"a\n", b"b\n"], ["c1", "c2"], eof=True)
    assert streams.lines(row.id, 1, 10) == [(2, b"b\n", "c2")]
    assert (streams.get("big").read, streams.get("big").eof) == (2, True)
    assert schema.upgrade(database) == []
    database.close()


def test_upgrade_from_v10_adds_call_provenance(db_url):
    """v10 -> v11: a call records the processor, commit and runtime that ran it and the call
    it replays; calls recorded before keep their rows, with no provenance."""
    from ectool.store import ledger

    database = open_store(db_url)
    seed_network()
    ledger.insert_call(id="old", socket="s", root="old", status="done", result='"r"')
    back_to_v10(database)
    assert "commit" not in {c.name for c in database.get_columns("call")}
    with pytest.raises(UsageError, match=f"is version 10, this ec needs {schema.CURRENT}"):
        schema.ensure(database)
    assert schema.upgrade(database) == since(10)
    old = ledger.get("old")
    assert (old.result, old.processor, old.commit, old.runtime, old.replay_of) == ('"r"', None, None, None, None)
    assert {"call_commit", "call_replay_of"} <= {i.name for i in database.get_indexes("call")}
    ledger.insert_call(id="new", socket="s", root="new", replay_of="old")
    assert ledger.get("new").replay_of == "old"
    assert schema.upgrade(database) == []
    database.close()
