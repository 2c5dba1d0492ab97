"""The dashboard app: owns the configuration, reads the store in worker threads, follows
the event stream, and pushes screens for the call graph, confirmations and the run dialog.

Data comes from the store unless a ``source`` is given: an object with
``snapshot(calls_filter) -> Snapshot`` and ``call_graph(call_id) -> (root, children)``
(the snapshot tests feed fixed data this way)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, TabbedContent, TabPane

from ..config import Config

if TYPE_CHECKING:
    from ..metrics import Usage
from . import data
from .banner import Banner
from .calls import CallsTable, CallsView
from .calltree import CallTreeScreen
from .confirm import ConfirmScreen
from .eventlog import EventLog
from .flow import FlowView
from .header import DashHeader
from .messages import EventsArrived, Problem, SnapshotReady
from .processors import ProcessorsView
from .queues import QueuesView
from .run import RunScreen
from .statusbar import StatusBar
from .workers import WorkersView

TABS = ("processors", "queues", "workers", "calls", "events", "flow")
#: an event triggers a read of the store at most this often (seconds)
EVENT_REFRESH = 1.0


class DashApp(App):
    CSS_PATH = "dash.tcss"
    TITLE = "ec dash"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("g", "reload", "Refresh"),
        Binding("c", "run", "Run"),
        *(Binding(str(i + 1), f"show_tab('{tab}')", tab.capitalize(), show=False) for i, tab in enumerate(TABS)),
    ]

    def __init__(self, config: Config, *, refresh: float = 2.0, follow: bool = True, source: Any = None) -> None:
        super().__init__()
        self.config = config
        self.source = source
        self.refresh_every = refresh
        self.follow = follow
        self.snapshot: data.Snapshot | None = None
        self.loads = 0  # snapshots applied (tests wait on it)
        self.events_seen = 0
        self._loading = False
        self._last_load = 0.0
        self._usage: Usage | None = None
        self._transport = None
        self._filter = ""
        self.last_run: tuple[str | None, str, str] = (None, "", "")  # socket, args, kwargs

    def compose(self) -> ComposeResult:
        yield DashHeader()
        yield Banner()
        with TabbedContent(id="tabs", initial="processors"):
            with TabPane("1 Processors", id="processors"):
                yield ProcessorsView(id="processors-table")
            with TabPane("2 Queues", id="queues"):
                yield QueuesView(id="queues-table")
            with TabPane("3 Agents & workers", id="workers"):
                yield WorkersView(id="workers-table")
            with TabPane("4 Calls", id="calls"):
                yield CallsView(id="calls-view")
            with TabPane("5 Events", id="events"):
                yield EventLog(id="event-log")
            with TabPane("6 Flow", id="flow"):
                yield FlowView(id="flow-table")
        yield StatusBar()
        yield Footer(show_command_palette=False)  # room for every key at 80 columns (^p still works)

    def on_mount(self) -> None:
        self.action_reload()
        self.set_interval(self.refresh_every, self.action_reload)
        if self.follow:
            self.follow_events()
        self.query_one(ProcessorsView).focus()

    # -- reading the store ---------------------------------------------------------------
    def action_reload(self) -> None:
        if not self._loading:
            self._loading = True
            self._last_load = time.monotonic()
            self.load()

    @work(thread=True, group="load")
    def load(self) -> None:
        from ..errors import EcError

        try:
            try:
                snap = self.source.snapshot(self._filter) if self.source is not None else self._read_store()
            except Exception as exc:  # noqa: BLE001 - shown in the banner, retried next tick
                text = str(exc) if isinstance(exc, EcError) else f"{type(exc).__name__}: {exc}"
                self.post_message(Problem("store", text.splitlines()[0] if text else "unknown error"))
                return
            self.post_message(Problem("store", None))
            self.post_message(SnapshotReady(snap))
        finally:
            self._loading = False

    def _read_store(self) -> data.Snapshot:
        from ..metrics import Usage
        from ..store import open_store
        from ..store.models import db

        if self._usage is None:
            self._usage = Usage()
        try:
            open_store(self.config.db, user=self.config.user)
            if self._transport is None:
                self._transport = self._open_transport()
            return data.load(self._usage, self._transport, self.config.namespace, self._filter)
        finally:
            db.close()

    def read_call_graph(self, call_id: str) -> tuple[Any, dict]:
        """The call graph of ``call_id`` (called from a worker thread)."""
        if self.source is not None:
            return self.source.call_graph(call_id)
        from ..store.models import db

        try:
            return data.call_graph(call_id)
        finally:
            db.close()

    def _open_transport(self) -> Any:
        from ..transport import open_transport

        try:
            transport = open_transport(self.config)
        except Exception as exc:  # noqa: BLE001 - depths unknown until it is back
            self.post_message(Problem("broker", str(exc)))
            return None
        return transport

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        from textual.css.query import NoMatches

        snap = message.snapshot
        self.snapshot = snap
        self.on_problem(Problem("access", f"not shown: you lack {', '.join(snap.denied)}" if snap.denied else None))
        try:
            self.query_one(DashHeader).show(snap)
            self.query_one(StatusBar).show(snap.counts)
            self.query_one(ProcessorsView).show(snap.processors)
            self.query_one(QueuesView).show(snap.queues)
            self.query_one(WorkersView).show(snap.agents, snap.workers, snap.nodes)
            self.query_one(CallsView).show(snap.calls)
            self.query_one(FlowView).show(snap.plugs, snap.schedules)
        except NoMatches:  # a snapshot read before the app began shutting down (as on_problem)
            return
        self.loads += 1

    def on_problem(self, message: Problem) -> None:
        from textual.css.query import NoMatches

        try:
            self.query_one(Banner).set_problem(message.source, message.text)
        except NoMatches:  # a late message while the app is shutting down
            pass

    # -- following events ------------------------------------------------------------------
    @work(thread=True, group="events")
    def follow_events(self) -> None:
        from textual.worker import get_current_worker

        from ..events import Subscription

        worker = get_current_worker()
        sub = None
        while not worker.is_cancelled:
            if sub is None:
                try:
                    sub = Subscription(self.config)
                    self.post_message(Problem("broker", None))
                except Exception as exc:  # noqa: BLE001 - retried; the store view still works
                    self.post_message(Problem("broker", str(exc)))
                    time.sleep(2.0)
                    continue
            batch, until = [], time.monotonic() + 0.25
            while not worker.is_cancelled and time.monotonic() < until:
                event = sub.get(timeout=max(0.0, until - time.monotonic()))
                if event is not None:
                    batch.append(event)
            self.post_message(Problem("broker", sub.problem))
            if batch:
                self.post_message(EventsArrived(batch))
        if sub is not None:
            sub.close()

    def on_events_arrived(self, message: EventsArrived) -> None:
        self.events_seen += len(message.events)
        self.query_one(EventLog).add(message.events)
        if time.monotonic() - self._last_load >= EVENT_REFRESH:
            self.action_reload()

    # -- actions -------------------------------------------------------------------------
    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        target = {"processors": ProcessorsView, "queues": QueuesView, "workers": WorkersView,
                  "calls": CallsTable, "flow": FlowView, "events": EventLog}[tab]
        self.query_one(target).focus()

    def action_processor(self, action: str) -> None:
        """Ask (after a confirmation) for ``action`` on the processor under the cursor."""
        name = self.query_one(ProcessorsView).current_key
        if name is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.request_status(name, action)

        self.push_screen(ConfirmScreen(f"{action.capitalize()} processor {name}?"), answered)

    @work(thread=True, group="actions")
    def request_status(self, name: str, action: str) -> None:
        from .. import network
        from ..agents import notify_agents
        from ..store import open_store
        from ..store.models import db

        try:
            open_store(self.config.db, user=self.config.user)
            proc = network.request_status(name, action)
            self.notify(f"processor {name}: requested {proc.requested_status}")
            notify_agents(self.config)
        except Exception as exc:  # noqa: BLE001 - shown, not fatal
            self.notify(f"cannot {action} {name}: {exc}", severity="error")
        finally:
            db.close()
        self.call_from_thread(self.action_reload)

    def action_run(self) -> None:
        """Open the run dialog: the known sockets, the last input (or the socket of the
        processor under the cursor)."""
        sockets = sorted({s for p in (self.snapshot.processors if self.snapshot else []) for s in p["sockets"]})
        socket, args, kwargs = self.last_run
        if socket not in sockets:
            socket = None
            if self.query_one(TabbedContent).active == "processors" and self.snapshot:
                name = self.query_one(ProcessorsView).current_key
                mine = [s for p in self.snapshot.processors if p["name"] == name for s in p["sockets"]]
                socket = mine[0] if mine else None
        self.push_screen(RunScreen(sockets, socket, args, kwargs))

    @on(Input.Changed, "#calls-filter")
    def filter_calls(self, event: Input.Changed) -> None:
        self._filter = event.value
        self.action_reload()

    @on(DataTable.RowSelected, "#calls-table")
    def open_call(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.push_screen(CallTreeScreen(event.row_key.value))

    def on_unmount(self) -> None:
        if self._transport is not None:
            try:
                self._transport.close()
            except Exception:  # noqa: BLE001
                pass
