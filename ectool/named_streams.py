"""Named streams as rows for ``ec ls streams`` / ``ec show stream`` / ``ec delete stream``
(the records :mod:`ectool.journal` writes and :mod:`ectool.attach` finishes)."""

from __future__ import annotations

from typing import Any

from .errors import NotFound
from .security import require
from .store import ledger, streams

COLUMNS = ["name", "socket", "state", "lines", "input", "sent", "written", "progress", "host", "pid", "updated"]


def to_row(row: streams.Stream) -> dict[str, Any]:
    """A stream as users see it: ``state`` is ``detached`` when the process recorded as
    writing it is gone (ec attach it); ``input`` is ``complete`` once every input line was
    read, ``reading`` while a producer reads it, ``cut`` when it died first; ``progress``
    the share of its lines written."""
    from .attach import producer_alive

    state = row.state
    if state == "running" and producer_alive(row) is False:
        state = "detached"
    producing = state == "running"
    lines = row.read
    return {
        "name": row.name, "socket": row.socket, "state": state, "lines": lines,
        "input": "complete" if row.eof else ("reading" if producing else "cut"),
        "sent": row.sent, "written": row.out_seq,
        "progress": f"{100 * row.out_seq / lines:.0f}%" if lines else "-",
        "host": row.host, "pid": row.pid, "updated": row.updated.isoformat(timespec="milliseconds"),
    }


def list_streams() -> list[dict[str, Any]]:
    require("READ_CALL")
    return [to_row(r) for r in streams.select()]


def show(name: str) -> dict[str, Any]:
    """One stream with its calls counted by status (those not in the store as ``unsent``)."""
    require("READ_CALL")
    row = streams.get(name)
    if row is None:
        raise NotFound(f"no stream named {name!r} (ec ls streams)")
    out = to_row(row)
    counts: dict[str, int] = {}
    ids = streams.calls_of(row.id)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        known = ledger.statuses(chunk)
        for cid in chunk:
            status = known[cid].status if cid in known else "unsent"
            counts[status] = counts.get(status, 0) + 1
    out["calls"] = counts
    out["options"] = row.options
    return out


def delete(name: str) -> None:
    """Forget a stream (its calls stay in the store)."""
    require("DELETE_CALL")
    if not streams.delete(name):
        raise NotFound(f"no stream named {name!r} (ec ls streams)")
