"""`ec dash` with Textual's Pilot against a real SQLite store (no services needed): it
starts and shows the network and the counts, a key pauses a processor (after a
confirmation) in the store, Enter on a call opens its graph with the failed node's error,
and the run dialog sends a call to a real worker. Snapshot tests (pytest-textual-snapshot)
draw the main screens from fixed data (:class:`FixedSource`, UTC), so they are the same on
every machine; after an intended change to the look: pytest tests/test_dash.py --snapshot-update."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from types import SimpleNamespace

import pytest

from ectool.config import load
from helpers import sample_network, workers

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config(tmp_path):
    """A store with two processors, sockets and a small failed workflow."""
    from ectool import network
    from ectool.store import open_store
    from ectool.store.models import Call, now

    config = load(db=f"sqlite:///{tmp_path / 'ec.db'}", broker=f"sqlite:///{tmp_path / 'queue.db'}")
    open_store(config.db)
    network.add_queue("q")
    network.add_processor("alpha", "file:///nowhere", "mod")
    network.add_processor("beta", "file:///nowhere", "mod")
    network.add_socket("a.add", "q", "alpha", "add")
    network.add_socket("b.mul", "q", "beta", "mul")
    network.add_plug("a-to-b", "a.add", "b.mul")
    t = now() - dt.timedelta(minutes=2)
    s = dt.timedelta(seconds=1)
    Call.insert_many([
        dict(id="root-1", socket="a.add", root="root-1", status="failed", submitted=t, started=t + s,
             finished=t + 3 * s, error_type="ChildFailed", error_message="a member failed"),
        dict(id="kid-1", socket="b.mul", root="root-1", parent="root-1", status="done", submitted=t + s,
             started=t + s, finished=t + 2 * s, result="6", commit="0123456789abcdef" * 2 + "01234567"),
        dict(id="kid-2", socket="b.mul", root="root-1", parent="root-1", status="failed", submitted=t + s,
             started=t + s, finished=t + 2 * s, error_type="ValueError", error_message="boom"),
        dict(id="done-1", socket="a.add", root="done-1", status="done", submitted=t, started=t, finished=t + s,
             commit="fedcba9876543210" * 2 + "fedcba98-dirty"),
        dict(id="wait-1", socket="a.add", root="wait-1", status="queued", submitted=t),
    ]).execute()
    return config


async def until(pilot, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def run(scenario) -> None:
    asyncio.run(scenario())


def test_dash_shows_processors_and_counts(config):
    from textual.widgets import DataTable

    from ectool.dash import make_app
    from ectool.dash.statusbar import StatusBar

    async def scenario():
        app = make_app(config, refresh=0.5, follow=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.loads > 0)
            table = app.query_one("#processors-table", DataTable)
            assert [table.get_row_at(i)[0] for i in range(table.row_count)] == ["alpha", "beta"]
            alpha, beta = app.snapshot.processors
            assert sum(alpha["in"]) == 3 and sum(alpha["out"]) == 2  # a.add: submitted 3, finished 2
            assert sum(beta["out"]) == 2 and table.get_row_at(0)[3].strip()  # a sparkline is drawn
            assert app.query_one(StatusBar).counts == {"queued": 1, "running": 0, "retrying": 0, "done": 2,
                                                       "failed": 2, "dead": 0, "cancelled": 0}
            text = str(app.query_one(StatusBar).render())
            assert "queued 1" in text and "failed 2" in text
            assert app.query_one("#queues-table", DataTable).row_count == 1
            assert app.query_one("#flow-table", DataTable).get_row_at(0)[:4] == ["a-to-b", "a.add", "->", "b.mul"]
            await pilot.press("4")
            calls = app.query_one("#calls-table", DataTable)
            assert calls.row_count == 5
            app.query_one("#calls-filter").value = "failed"
            await until(pilot, lambda: calls.row_count == 2)

    run(scenario)


def test_dash_shows_only_what_the_user_may_read(config):
    """The dashboard checks READ_ privileges like ``ec ls``: a user who may read processors
    and sockets but not calls sees the processors, no calls or counts, and a banner."""
    import dataclasses

    from textual.widgets import DataTable

    from ectool import network
    from ectool.dash import make_app
    from ectool.dash.banner import Banner

    network.add_role("viewer", ["READ_PROCESSOR", "READ_SOCKET"])
    network.add_user("mallory", ["viewer"])

    async def scenario():
        app = make_app(dataclasses.replace(config, user="mallory"), refresh=0.5, follow=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.loads > 0)
            table = app.query_one("#processors-table", DataTable)
            assert [table.get_row_at(i)[0] for i in range(table.row_count)] == ["alpha", "beta"]
            assert app.snapshot.calls == [] and app.snapshot.counts == {}
            assert sum(app.snapshot.processors[0]["out"]) == 0
            assert app.query_one("#queues-table", DataTable).row_count == 0
            banner = str(app.query_one(Banner).render())
            assert "READ_CALL" in banner and "READ_QUEUE" in banner and "READ_PROCESSOR" not in banner

    run(scenario)


def test_dash_pauses_a_processor_after_confirming(config):
    from textual.widgets import DataTable

    from ectool.dash import make_app
    from ectool.dash.confirm import ConfirmScreen
    from ectool.store.models import Processor

    def requested(name: str) -> str:
        return Processor.get(Processor.name == name).requested_status

    async def scenario():
        app = make_app(config, refresh=0.5, follow=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.loads > 0)
            table = app.query_one("#processors-table", DataTable)
            table.focus()
            await pilot.press("down")  # beta
            await pilot.press("p")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            await pilot.pause(0.2)
            assert requested("beta") == "running"
            await pilot.press("p")
            await pilot.press("y")
            await until(pilot, lambda: requested("beta") == "paused")
            assert requested("alpha") == "running"
            await until(pilot, lambda: app.snapshot.processors[1]["requested"] == "paused")

    run(scenario)


def test_dash_enter_opens_the_call_graph(config):
    from textual.widgets import DataTable, Tree

    from ectool.dash import make_app
    from ectool.dash.calltree import CallTreeScreen

    async def scenario():
        app = make_app(config, refresh=5, follow=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.loads > 0)
            await pilot.press("4")
            calls = app.query_one("#calls-table", DataTable)
            calls.move_cursor(row=calls.get_row_index("kid-2"))
            await pilot.press("enter")
            assert isinstance(app.screen, CallTreeScreen)
            tree = app.screen.query_one(Tree)
            await until(pilot, lambda: "root-1" in str(tree.root.label))

            def labels(node):
                return [str(node.label)] + [x for c in node.children for x in labels(c)]

            shown = labels(tree.root)
            assert "a.add failed 2000ms" in shown[0]
            assert any("kid-1" in x and "done" in x for x in shown)
            assert any("kid-2" in x and "failed" in x for x in shown)
            assert any("ValueError: boom" in x for x in shown)
            await pilot.press("escape")
            assert not isinstance(app.screen, CallTreeScreen)

    run(scenario)


def test_dash_follows_events(config):
    from ectool import events
    from ectool.dash import make_app
    from ectool.dash.eventlog import EventLog

    async def scenario():
        app = make_app(config, refresh=5, follow=True)
        bus = events.Bus(config)
        try:
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.loads > 0)
                # the subscription opens in a worker thread: publish until one arrives
                deadline = time.monotonic() + 10
                while app.events_seen == 0 and time.monotonic() < deadline:
                    bus.publish("call.done", call="done-1", socket="a.add")
                    await pilot.pause(0.2)
                assert app.events_seen > 0
                await pilot.press("5")  # a log renders once it is shown
                await until(pilot, lambda: any("call.done" in line.text and "a.add" in line.text
                                               for line in app.query_one(EventLog).lines))
        finally:
            bus.close()

    run(scenario)


# -- the run dialog ------------------------------------------------------------------------


def dialog_text(app) -> tuple[str, str]:
    """The run dialog's status line and result, as plain text."""
    from textual.widgets import Static

    return (str(app.screen.query_one("#run-status", Static).render()),
            str(app.screen.query_one("#run-result", Static).render()))


async def send(pilot, socket: str, args: str, kwargs: str = "") -> None:
    from textual.widgets import Input, Select

    screen = pilot.app.screen
    screen.query_one("#run-socket", Select).value = socket
    screen.query_one("#run-kwargs", Input).value = kwargs
    field = screen.query_one("#run-args", Input)
    field.value = ""
    field.focus()
    await pilot.press(*args)  # typed, as a person would
    await pilot.press("enter")


@pytest.mark.timeout(180)
def test_run_dialog_sends_a_call_to_a_worker(tmp_path):
    from ectool.dash import make_app
    from ectool.dash.run import RunScreen
    from ectool.store.models import Call

    with sample_network(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}") as (env, proc):
        config = load(db=env["EC_DB"], broker=env["EC_BROKER"])

        async def scenario():
            app = make_app(config, refresh=5, follow=False)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.loads > 0)
                await pilot.press("c")
                assert isinstance(app.screen, RunScreen)
                assert app.screen.sockets == sorted(s for p in app.snapshot.processors for s in p["sockets"])
                await send(pilot, "add_two", "3 10")
                await until(pilot, lambda: dialog_text(app)[1] == "13", timeout=120)
                status = dialog_text(app)[0]
                assert status.startswith("call ") and "done (1 attempt)" in status
                cid = status.split()[1]
                stored = Call.get_by_id(cid)
                assert (stored.socket, stored.status, stored.result) == ("add_two", "done", "13")
                # words are read like ec run's: quotes group, JSON where it parses
                await send(pilot, "do_something", "'two words' [1,2] x")
                await until(pilot, lambda: dialog_text(app)[1] == "do_something(two words, [1, 2], x)",
                            timeout=60)
                # a failed call shows its error type and message, on one line
                await send(pilot, "boom", "", kwargs="message=bad")
                await until(pilot, lambda: "failed: ValueError: bad" in dialog_text(app)[0], timeout=60)
                assert "\n" not in dialog_text(app)[0] and dialog_text(app)[1] == ""
                await pilot.press("escape")
                assert not isinstance(app.screen, RunScreen)
                await pilot.press("c")  # reopens with the last input
                assert app.screen.query_one("#run-socket").value == "boom"
                assert app.screen.query_one("#run-kwargs").value == "message=bad"
                # the wait happens in a thread: the dialog closes while the call still runs
                await send(pilot, "sleep", "5 slept")
                await until(pilot, lambda: "waiting for its result" in dialog_text(app)[0], timeout=30)
                cid = dialog_text(app)[0].split()[1]
                await pilot.press("escape")
                assert not isinstance(app.screen, RunScreen)
                assert Call.get_by_id(cid).status != "done"  # closed before the result came
                await until(pilot, lambda: Call.get_by_id(cid).status == "done", timeout=30)
                assert Call.get_by_id(cid).result == '"slept"'

        with workers(env, proc):
            run(scenario)


def test_run_dialog_shows_bad_input_and_denials_on_one_line(config):
    from ectool.dash import make_app
    from ectool.dash.run import RunScreen, parse_input
    from ectool.store.models import Call

    assert parse_input('3 "two words" \'{"a": 1}\' x', "n=2 s=y") == ([3, "two words", {"a": 1}, "x"],
                                                                     {"n": 2, "s": "y"})
    calls = Call.select().count()

    async def scenario(config, cases):
        app = make_app(config, refresh=5, follow=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.loads > 0)
            await pilot.press("c")
            assert isinstance(app.screen, RunScreen)
            for args, kwargs, expected in cases:
                await send(pilot, "a.add", args, kwargs)
                await until(pilot, lambda: "Error" in dialog_text(app)[0] or "Denied" in dialog_text(app)[0])
                status, result = dialog_text(app)
                assert status == expected and "\n" not in status and result == ""
            app.screen.query_one("#run-go").focus()
            await pilot.press("c")  # a modal screen: the app's keys stay outside, no second dialog
            assert len(app.screen_stack) == 2
            await pilot.press("escape")
            assert not isinstance(app.screen, RunScreen)

    run(lambda: scenario(config, [
        ('"unclosed', "", "UsageError: cannot split the input into words: No closing quotation"),
        ("1", "x", "UsageError: expected NAME=VALUE, got 'x'"),
        ("1", "2x=1", "UsageError: bad keyword argument name '2x'"),
    ]))
    # the library checks privileges: a user who may read the network but lacks RUN_TASK is
    # refused, nothing is sent
    from ectool import network
    from ectool.store import open_store

    open_store(config.db)
    network.add_role("viewer", ["READ_PROCESSOR", "READ_SOCKET"])
    network.add_user("mallory", ["viewer"])
    run(lambda: scenario(dataclasses.replace(config, user="mallory"), [
        ("1 2", "", "PermissionDenied: user 'mallory' lacks RUN_TASK (an admin can grant it: "
                    "ec add role -n NAME -p RUN_TASK; ec add user -n mallory -r NAME)"),
    ]))
    assert Call.select().count() == calls


# -- snapshots of the main screens (fixed data, fixed size, UTC) ----------------------------

T0 = dt.datetime(2024, 5, 17, 9, 30)  # naive UTC, as the store keeps times


def ago(seconds: float) -> dt.datetime:
    return T0 - dt.timedelta(seconds=seconds)


class FixedSource:
    """What the dashboard shows, fixed: no store, no clock, no hostnames or pids of this
    machine (passed to the app as its ``source``)."""

    def snapshot(self, calls_filter: str = ""):
        from ectool.dash.data import Snapshot, parse_filter

        wave = [0, 2, 5, 9, 14, 12, 8, 11, 17, 20, 16, 13, 18, 22, 19]
        processors = [
            {"name": "etl", "requested": "running", "status": "error", "reason": "git clone failed",
             "hosts": [], "workers": 0, "commit": "", "branch": "main", "in": [0] * 15, "out": [0] * 15,
             "rate": 0.0, "sockets": ["extract", "load"], "running": 0},
            {"name": "reports", "requested": "paused", "status": "paused", "reason": None, "hosts": ["node-a"],
             "workers": 0, "commit": "9b1d07e55c2a", "branch": "main", "in": [3, 1, 0] + [0] * 12,
             "out": [2, 2, 0] + [0] * 12, "rate": 0.0, "sockets": ["render"], "running": 0},
            {"name": "sample", "requested": "running", "status": "running", "reason": None,
             "hosts": ["node-a", "node-b"], "workers": 3, "commit": "3f2a9c1d0b7e", "branch": "main",
             "in": [w + 1 for w in wave], "out": wave, "rate": 17.6,
             "sockets": ["add_two", "boom", "do_something"], "running": 2},
        ]
        queues = [
            {"name": "bulk", "type": "direct", "kind": "classic", "max_length": 10000, "sockets": 3, "depth": 0,
             "queued": 0, "in_per_min": 0.0, "out_per_min": 0.0, "out": [2, 2] + [0] * 13},
            {"name": "q", "type": "direct", "kind": "quorum", "max_length": None, "sockets": 3, "depth": 4,
             "queued": 5, "in_per_min": 18.6, "out_per_min": 17.6, "out": wave},
        ]
        agents = [{"name": f"node-{x}", "host": f"node-{x}", "pid": 1000 + i, "cpus": 4, "status": status,
                   "heartbeat": ago(3)} for i, (x, status) in enumerate(zip("abc", ("online", "online", "lost"), strict=True))]
        workers = [{"processor": "sample", "host": host, "pid": pid, "cpu": cpu, "status": status,
                    "commit": "3f2a9c1d0b7e44", "cpu_percent": pct, "rss_mb": rss, "heartbeat": ago(2)}
                   for host, pid, cpu, pct, rss, status in (
                       ("node-a", 2101, 0, 41.5, 38.2, "running"), ("node-a", 2102, 1, 12.0, 37.9, "running"),
                       ("node-b", 3301, 0, None, None, "running"), ("node-c", 4401, 0, None, None, "lost"))]
        nodes = [{"name": name, "state": state, "cpus": 4, "load": load, "processors": procs}
                 for name, state, load, procs in (("node-a", "online", 1.5, ["samplex2"]),
                                                  ("node-b", "cordoned", 0.4, ["samplex1"]),
                                                  ("node-c", "lost", None, []))]
        calls = [
            {"id": "c0ffee00-0000-4000-8000-000000000001", "socket": "add_two", "status": "done", "attempts": 1,
             "submitted": ago(5), "ms": 12.4, "error_type": None, "root": "c0ffee00-0000-4000-8000-000000000001",
             "commit": "9f2c4e1a" + "0" * 32},
            {"id": "c0ffee00-0000-4000-8000-000000000002", "socket": "do_something", "status": "running",
             "attempts": 1, "submitted": ago(9), "ms": None, "error_type": None,
             "root": "c0ffee00-0000-4000-8000-000000000002"},
            {"id": "c0ffee00-0000-4000-8000-000000000003", "socket": "boom", "status": "failed", "attempts": 3,
             "submitted": ago(40), "ms": 3.1, "error_type": "ValueError",
             "root": "c0ffee00-0000-4000-8000-000000000003", "commit": "5b7d01c3" + "0" * 32 + "-dirty"},
            {"id": "c0ffee00-0000-4000-8000-000000000004", "socket": "add_two", "status": "queued", "attempts": 0,
             "submitted": ago(61), "ms": None, "error_type": None, "root": "c0ffee00-0000-4000-8000-000000000004"},
        ]
        status, socket = parse_filter(calls_filter)
        calls = [c for c in calls if (not status or c["status"] == status) and (not socket or socket in c["socket"])]
        return Snapshot(at=T0, counts={"queued": 5, "running": 2, "retrying": 1, "done": 1204, "failed": 7,
                                       "dead": 1, "cancelled": 0},
                        hosts=["node-a", "node-b"], processors=processors, queues=queues, agents=agents,
                        workers=workers, calls=calls,
                        plugs=[{"name": "sum-to-report", "source": "add_two", "target": "render",
                                "argument": "total"}],
                        host={"cpu_percent": 37.0}, nodes=nodes)

    def call_graph(self, call_id: str):
        def call(id, socket, status, start, took, **kw):
            return SimpleNamespace(id=id, socket=socket, status=status, submitted=ago(start + 0.2),
                                   started=ago(start), finished=ago(start - took), attempts=kw.pop("attempts", 1),
                                   error_type=kw.pop("error_type", None), error_message=kw.pop("error_message", None))

        root = call("wf-root", "funnel", "failed", 10, 2.5, error_type="ChildFailed", error_message="a member failed")
        return root, {"wf-root": [call("wf-1", "add_two", "done", 9.9, 0.012),
                                  call("wf-2", "boom", "failed", 9.9, 0.003, attempts=3, error_type="ValueError",
                                       error_message="boom")]}


EVENTS = [{"kind": "call.done", "time": 1715938200.0 + i, "host": "node-a", "pid": 2101, "socket": "add_two",
           "call": f"c0ffee00-0000-4000-8000-00000000000{i}", "ms": 12.4} for i in range(3)]
EVENTS.append({"kind": "worker.heartbeat", "time": 1715938204.0, "host": "node-b", "pid": 3301,
               "processor": "sample", "cpu_percent": 3.5, "rss_mb": 41.2})


@pytest.fixture
def frozen():
    """Times shown in UTC, whatever the machine's zone; in colour (conftest sets NO_COLOR
    for the CLI tests, which Textual would honour with a monochrome screen)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "UTC")
        mp.delenv("NO_COLOR", raising=False)
        time.tzset()
        yield
    time.tzset()


def fixed_app(tmp_path):
    from ectool.dash import make_app

    config = load(db=f"sqlite:///{tmp_path / 'unused.db'}", broker=f"sqlite:///{tmp_path / 'unused-q.db'}")
    return make_app(config, refresh=3600, follow=False, source=FixedSource())


async def loaded(pilot) -> None:
    await until(pilot, lambda: pilot.app.loads > 0)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_snapshot_processors(snap_compare, frozen, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path), terminal_size=size, run_before=loaded)


@pytest.mark.parametrize("tab", ["2", "3", "4", "6"], ids=["queues", "workers", "calls", "flow"])
def test_snapshot_tabs(snap_compare, frozen, tmp_path, tab):
    assert snap_compare(fixed_app(tmp_path), press=[tab], terminal_size=(120, 40), run_before=loaded)


def test_snapshot_events(snap_compare, frozen, tmp_path):
    from ectool.dash.messages import EventsArrived

    async def before(pilot):
        await loaded(pilot)
        pilot.app.post_message(EventsArrived(EVENTS))
        await pilot.press("5")

    assert snap_compare(fixed_app(tmp_path), terminal_size=(120, 40), run_before=before)


def test_snapshot_call_graph(snap_compare, frozen, tmp_path):
    async def before(pilot):
        await loaded(pilot)
        await pilot.press("4", "down", "down", "enter")
        await until(pilot, lambda: "wf-root" in str(pilot.app.screen.query_one("Tree").root.label))

    assert snap_compare(fixed_app(tmp_path), terminal_size=(120, 40), run_before=before)


def test_snapshot_run_dialog(snap_compare, frozen, tmp_path):
    assert snap_compare(fixed_app(tmp_path), press=["c"], terminal_size=(120, 40), run_before=loaded)


def test_snapshot_run_dialog_error(snap_compare, frozen, tmp_path):
    assert snap_compare(fixed_app(tmp_path), press=["c", *"1", "tab", *"oops", "enter"], terminal_size=(80, 24),
                        run_before=loaded)
