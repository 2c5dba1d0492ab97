"""``ec replay``: run a recorded call (or workflow) again, at the commit that ran it.

The replay is a new call with the original's socket and arguments, linked to it
(``call.replay_of``), whose message carries a ``pin``: the commit to run at. By default
that is the commit the original recorded (its provenance, schema v11); ``at`` names
another, ``current`` drops the pin (the processor's deployment serves it, as any call). A
worker whose own commit differs deploys the pinned one on demand
(:mod:`ectool.worker.pinned`). A workflow is replayed as a whole: the same plan, each
step pinned to the commit its original step ran at.

Before anything is submitted the commit is looked up in the processor's repository, so a
commit that no longer exists there is a usage error naming it, not a call that fails later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import NotFound, UsageError
from .store.models import Call, Processor, Socket, Workflow
from .worker.shim import from_json_value
from .workflow import leaves


@dataclass(frozen=True)
class Replay:
    id: str  # the new call (or workflow)
    of: str  # the original
    pin: str | None  # the commit it is pinned to (None: whatever is deployed)
    workflow: bool = False


def plan_pins(plan: dict, step_commit: dict[tuple[int, ...], str | None]) -> dict:
    """A copy of ``plan`` whose leaf nodes carry ``pin``: the commit their original step
    ran at (``step_commit`` by path; a step with none is left unpinned). Pure."""
    copy = json.loads(json.dumps(plan))
    for path, node in leaves(copy):
        node.pop("pin", None)
        if step_commit.get(path):
            node["pin"] = step_commit[path]
    return copy


def processor_of(row: Call) -> Processor:
    """The processor that ran ``row`` (recorded), else the one its socket belongs to now."""
    name = row.processor
    if name is None:
        sock = Socket.get_or_none(Socket.name == row.socket)
        if sock is None:
            raise NotFound(f"call {row.id}'s socket {row.socket!r} no longer exists: it cannot be replayed")
        return sock.processor
    proc = Processor.get_or_none(Processor.name == name)
    if proc is None:
        raise NotFound(f"call {row.id}'s processor {name!r} no longer exists: it cannot be replayed")
    return proc


def check_commit(proc: Processor, commit: str, what: str) -> str:
    """The full sha of ``commit`` in ``proc``'s repository; a usage error naming it when the
    repository no longer has it (or cannot be read)."""
    from agentd import deploy

    if commit.endswith("-dirty"):
        raise UsageError(f"{what} ran at uncommitted changes on top of {commit.removesuffix('-dirty')}: "
                         "that code is not in the repository; give --at COMMIT or --current")
    gone = UsageError(f"commit {commit} no longer exists in {proc.gitrepo} (processor {proc.name}): "
                      f"cannot replay {what} at it")
    try:
        url, _ = deploy.split_url(proc.gitrepo)
        clone = deploy.fetch(url)
        sha, _ = deploy.resolve(clone, None, commit)
    except deploy.DeployError as exc:
        if "does not exist" in str(exc):
            raise gone from None
        raise UsageError(f"cannot check commit {commit} of processor {proc.name}: {exc}") from None
    if not reachable(clone, sha):  # its objects linger in the clone; no branch or tag holds it
        raise gone
    return sha


def reachable(clone, sha: str) -> bool:
    """Is ``sha`` on a branch or tag of the (fetched, pruned) bare clone ``clone``?"""
    import subprocess

    done = subprocess.run(["git", "-C", str(clone), "for-each-ref", "--count=1", "--contains", sha,
                           "refs/heads", "refs/tags"], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and bool(done.stdout.strip())


def _args(row: Call) -> tuple[list, dict[str, Any]]:
    data = from_json_value(json.loads(row.args)) if row.args else {}
    return list(data.get("args") or []), dict(data.get("kwargs") or {})


def replay(client, call_id: str, *, at: str | None = None, current: bool = False, reply: bool = True) -> Replay:
    """Submit a replay of call (or workflow) ``call_id`` with ``client``; see the module."""
    from .calls import get_call
    from .security import require

    require("READ_CALL")
    if at and current:
        raise UsageError("give --at COMMIT or --current, not both")
    row = get_call(call_id)
    wf = Workflow.get_or_none(Workflow.id == row.id)
    if wf is not None:
        return _replay_workflow(client, row, wf, at, current, reply)
    if row.socket == "flow" or row.args is None:
        raise UsageError(f"call {call_id} is not a socket's call (a shell flow?): replay its calls instead")
    pin = _pin_for(row, at, current)
    args, kwargs = _args(row)
    new = client.submit(row.socket, [(args, kwargs)], reply=reply, pin=pin, replay_of=row.id)[0]
    return Replay(new, row.id, pin)


def _pin_for(row: Call, at: str | None, current: bool) -> str | None:
    if current:
        return None
    proc = processor_of(row)
    if at:
        return check_commit(proc, at, f"call {row.id}")
    if not row.commit:
        raise UsageError(f"call {row.id} records no commit (run before provenance, or not from git): "
                         "give --at COMMIT or --current")
    return check_commit(proc, row.commit, f"call {row.id}")


def _replay_workflow(client, root: Call, wf: Workflow, at: str | None, current: bool, reply: bool) -> Replay:
    """The same plan again, each step pinned to its original step's commit (or ``at``)."""
    from . import workflow as wfp

    plan = json.loads(wf.plan)
    paths = [p for p, _ in leaves(plan)]
    steps = {p: Call.get_or_none(Call.id == wfp.node_id(root.id, list(p))) for p in paths}
    pins: dict[tuple[int, ...], str | None] = {}
    for p, step in steps.items():
        if current or step is None:
            continue
        if at is None and not step.commit:
            continue  # a step that never ran (its workflow failed before it): whatever is deployed
        pins[p] = _pin_for(step, at, False)
    new = client.engine.submit(plan_pins(plan, pins), reply_to=client.inbox.address if reply else None,
                               replay_of=root.id)
    distinct = {v for v in pins.values() if v}
    return Replay(new, root.id, distinct.pop() if len(distinct) == 1 else None, workflow=True)


def side_by_side(left: tuple[str, str], right: tuple[str, str], width: int = 38) -> list[str]:
    """Two titled texts as columns ``left | right``, line by line (pure)."""
    a = [left[0], "-" * len(left[0]), *left[1].splitlines()]
    b = [right[0], "-" * len(right[0]), *right[1].splitlines()]
    w = max([width, *(len(x) for x in a)])
    rows = []
    for i in range(max(len(a), len(b))):
        x, y = (a[i] if i < len(a) else ""), (b[i] if i < len(b) else "")
        mark = " " if i < 2 or x == y else "|"
        rows.append(f"{x:<{w}} {mark} {y}".rstrip())
    return rows


def outcome_text(row: Call) -> str:
    """A call's outcome as ``ec run`` prints it: the result (text as text, else JSON), or
    its status and error."""
    from .output import result_text

    if row.status == "done":
        value = from_json_value(json.loads(row.result)) if row.result is not None else None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else result_text(value)
    return f"{row.status}: {row.error_type or ''}: {row.error_message or ''}"


def compare(original: Call, again: Call) -> tuple[bool, list[str], dict[str, Any]]:
    """(whether ``again`` ended as ``original`` did, the two side by side, the same as
    JSON fields)."""
    def title(row: Call) -> str:
        return f"{row.id[:8]} @{(row.commit or '?')[:8]} {row.status}"

    same = (original.status, original.result) == (again.status, again.result) and (
        original.status == "done" or (original.error_type, original.error_message) ==
        (again.error_type, again.error_message))
    lines = side_by_side((title(original), outcome_text(original)), (title(again), outcome_text(again)))
    body = {"same": same, "original": _side(original), "replay": _side(again)}
    return same, lines, body


def _side(row: Call) -> dict[str, Any]:
    return {"id": row.id, "commit": row.commit, "status": row.status,
            "result": json.loads(row.result) if row.result is not None else None,
            "error_type": row.error_type, "error_message": row.error_message}
