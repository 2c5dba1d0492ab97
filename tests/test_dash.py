"""`ec dash` with Textual's Pilot against a real SQLite store (no services needed): it
starts and shows the network and the counts, a key pauses a processor (after a
confirmation) in the store, and Enter on a call opens its graph with the failed node's error."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from ectool.config import load

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
             started=t + s, finished=t + 2 * s, result="6"),
        dict(id="kid-2", socket="b.mul", root="root-1", parent="root-1", status="failed", submitted=t + s,
             started=t + s, finished=t + 2 * s, error_type="ValueError", error_message="boom"),
        dict(id="done-1", socket="a.add", root="done-1", status="done", submitted=t, started=t, finished=t + s),
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
