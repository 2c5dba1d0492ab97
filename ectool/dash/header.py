"""The header: active hosts (and how many are lost), queues, processors, serving workers
and a system-usage sparkline."""

from __future__ import annotations

from collections import deque

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from .. import liveness
from .data import Snapshot


class DashHeader(Horizontal):
    def __init__(self) -> None:
        super().__init__(id="header")
        self.cpu: deque[float] = deque([0.0] * 60, maxlen=60)

    def compose(self) -> ComposeResult:
        yield Static("[b]ElasticCode[/b]", id="title")
        yield Static("connecting...", id="summary")
        yield Static("cpu", id="cpu-label")
        yield Sparkline(list(self.cpu), id="usage")

    def show(self, snap: Snapshot) -> None:
        serving = sum(liveness.live(w["status"]) for w in snap.workers)  # lost ones are not
        lost = sum(n["state"] == liveness.LOST for n in snap.nodes)
        self.query_one("#summary", Static).update(
            f"hosts [b]{len(snap.hosts)}[/b]{f' ([b]{lost}[/b] lost)' if lost else ''}  "
            f"queues [b]{len(snap.queues)}[/b]  "
            f"processors [b]{len(snap.processors)}[/b]  workers [b]{serving}[/b]")
        cpu = snap.host.get("cpu_percent")
        if cpu is not None:
            self.cpu.append(float(cpu))
            self.query_one("#usage", Sparkline).data = list(self.cpu)
            self.query_one("#cpu-label", Static).update(f"cpu {cpu:.0f}%")
