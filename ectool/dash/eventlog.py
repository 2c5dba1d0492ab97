"""The events pane: the live event stream, newest at the bottom."""

from __future__ import annotations

import time

from textual.widgets import RichLog

DETAIL = ("socket", "processor", "agent", "call", "ms", "error_type", "cpu_percent", "rss_mb", "reason", "error")


def event_line(event: dict) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0)))
    rest = " ".join(f"{k}={event[k]}" for k in DETAIL if event.get(k) is not None)
    return f"{stamp} {event.get('kind', '?'):<18} {event.get('host', '')}:{event.get('pid', '')} {rest}"


class EventLog(RichLog):
    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=1000, markup=False, wrap=False, **kwargs)

    def add(self, events: list[dict]) -> None:
        for event in events:
            self.write(event_line(event))
