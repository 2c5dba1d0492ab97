"""A call's workflow as a tree: each node with its status and timing; failed nodes show
their error."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Tree

from .calls import short_commit
from .messages import CallGraphReady
from .statusbar import COLOURS


def node_label(call) -> str:
    took = ""
    if call.started and call.finished:
        took = f" {(call.finished - call.started).total_seconds() * 1000:.0f}ms"
    wait = ""
    if call.started and call.submitted:
        wait = f" waited {(call.started - call.submitted).total_seconds() * 1000:.0f}ms"
    colour = COLOURS.get(call.status, "white")
    at = f" @{short_commit(call.commit)}" if getattr(call, "commit", None) else ""
    return f"{call.socket} [{colour}]{call.status}[/]{took}{wait} x{call.attempts}{at} [dim]{call.id}[/]"


class CallTreeScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Close")]

    def __init__(self, call_id: str) -> None:
        super().__init__()
        self.call_id = call_id

    def compose(self) -> ComposeResult:
        with Vertical(id="calltree"):
            yield Label(f"call graph of {self.call_id} (Esc closes)")
            yield Tree("loading...", id="graph")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True)
    def load(self) -> None:
        try:
            root, children = self.app.read_call_graph(self.call_id)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - shown in the tree
            self.post_message(CallGraphReady(None, {"error": str(exc)}))
            return
        self.post_message(CallGraphReady(root, children))

    def on_call_graph_ready(self, message: CallGraphReady) -> None:
        tree = self.query_one(Tree)
        if message.root is None:
            tree.root.set_label(f"cannot read the call: {message.children.get('error')}")
            return
        tree.root.set_label(node_label(message.root))

        def add(node, call) -> None:
            if call.status in ("failed", "dead") and (call.error_type or call.error_message):
                node.add_leaf(f"[red]{call.error_type or 'error'}: {call.error_message or ''}[/]")
            for child in message.children.get(call.id, []):
                add(node.add(node_label(child), expand=True), child)

        add(tree.root, message.root)
        tree.root.expand_all()
