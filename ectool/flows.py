"""Shell flows: every ``ec run`` / ``ec map`` in an environment with ``EC_FLOW`` set joins
one flow, so a shell pipeline and its ``tee`` branches read back as one call graph.

A flow is a pseudo-call in the store (socket ``flow``, id = ``EC_FLOW``) that is the root
of every call made in it; ``ec ls call --id $EC_FLOW -g`` prints the graph. Within a flow,
a call whose stdin was a pipe from another ``ec`` in the same flow gets that call as its
parent: the writer leaves its call id under the pipe's inode in a per-flow directory, and
the reader picks it up (pipe inode numbers are not reused in a flow's lifetime).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import uuid
from pathlib import Path

from . import paths
from .errors import UsageError
from .security import require
from .store import ledger
from .store.models import FINAL_CALL_STATUS, now

FLOW_SOCKET = "flow"
ENV = "EC_FLOW"


def current() -> str | None:
    """The flow of this environment (``EC_FLOW``), if any."""
    return os.environ.get(ENV) or None


def check_id(flow: str) -> str:
    try:
        return str(uuid.UUID(flow))
    except ValueError:
        raise UsageError(f"EC_FLOW={flow!r} is not a flow id (a UUID from 'ec flow begin')") from None


def begin(label: str | None = None) -> str:
    """Create a flow's root pseudo-call (status ``running``) and return its id."""
    fid = str(uuid.uuid4())
    ensure(fid, label)
    return fid


def ensure(flow: str, label: str | None = None) -> None:
    """Make sure the flow's root row exists (a hand-set ``EC_FLOW`` gets one on first use)."""
    if ledger.get(flow) is not None:
        return
    require("RUN_TASK")  # a flow is a call: whoever may call sockets may open one
    ledger.insert_call(id=flow, socket=FLOW_SOCKET, root=flow, flow=flow, status="running", attempts=1,
                       args=json.dumps({"args": [label] if label else [], "kwargs": {}}), started=now())


def end(flow: str, status: str = "done", message: str | None = None) -> None:
    """Close a flow: its root becomes ``done`` (or ``failed`` with a message); its calls
    are untouched. Removes the flow's pipe links."""
    row = ledger.get(flow)
    if row is None or row.socket != FLOW_SOCKET:
        raise UsageError(f"no flow {flow!r}")
    require("RUN_TASK")
    if row.status not in FINAL_CALL_STATUS:
        ledger.close(flow, status, error_type="FlowFailed" if status == "failed" else None,
                     error_message=message)
    shutil.rmtree(links_dir(flow), ignore_errors=True)


# ---------------------------------------------------------------- pipe links

def links_dir(flow: str) -> Path:
    return paths.cache_dir() / "flows" / flow


def pipe_key(fd: int) -> str | None:
    """``dev-inode`` of the pipe on ``fd``, or None if it is not a pipe."""
    try:
        st = os.fstat(fd)
    except (OSError, ValueError):
        return None
    return f"{st.st_dev}-{st.st_ino}" if stat.S_ISFIFO(st.st_mode) else None


def record_output(flow: str, call_id: str, fd: int | None = None) -> None:
    """Leave ``call_id`` for whoever reads our stdout pipe (best-effort)."""
    key = pipe_key(sys.stdout.fileno() if fd is None else fd)
    if key is None:
        return
    try:
        d = links_dir(flow)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}"
        tmp.write_text(call_id)
        tmp.replace(d / key)
    except OSError:
        pass


def input_parent(flow: str, fd: int | None = None) -> str | None:
    """The call whose output is our stdin pipe, if an ``ec`` in this flow left one."""
    key = pipe_key(sys.stdin.fileno() if fd is None else fd)
    if key is None:
        return None
    link = links_dir(flow) / key
    try:
        call_id = link.read_text().strip()
        link.unlink()
    except (OSError, UnicodeDecodeError):  # gone, or not ours: no parent
        return None
    return call_id or None


def lineage(stdin_used: bool = True) -> tuple[str | None, str | None, str | None]:
    """(flow, parent, root) for calls made now: outside a flow all None; inside, root is
    the flow and the parent the upstream ``ec`` call when stdin came from one."""
    flow = current()
    if flow is None:
        return None, None, None
    flow = check_id(flow)
    ensure(flow)
    parent = input_parent(flow) if stdin_used else None
    return flow, parent or flow, flow
