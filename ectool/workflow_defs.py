"""Named workflows: a pipeline, parallel or funnel stored under a name, so a schedule
(``ec add schedule --workflow NAME``) can start it on every tick.

A compose file defines them::

    [[workflow]]
    name = "etl"
    pipeline = ["extract", {socket = "transform", args = [2]}, {parallel = ["load_a", "load_b"]}]

    [[workflow]]
    name = "sums"
    funnel = ["count_a", "count_b"]
    final = "total"

Each node is a socket's name, ``{socket = S, args = [...], kwargs = {...}}``,
``{pipeline = [...]}``, ``{parallel = [...]}`` or ``{funnel = [...], final = NODE}``, with
the semantics of :mod:`ectool.api`'s ``pipeline``/``parallel``/``funnel``. The store keeps
the engine's plan (:mod:`ectool.workflow`); :func:`to_plan` and :func:`to_spec` convert
between the two (pure), :func:`define` and friends are the I/O.
"""

from __future__ import annotations

import json
from typing import Any

from . import workflow as wfp
from .errors import NotFound, UsageError
from .security import require
from .store.schedules import NamedWorkflow

KINDS = ("socket", "pipeline", "parallel", "funnel")
#: the keys each kind of node may have
KEYS = {"socket": {"socket", "args", "kwargs"}, "pipeline": {"pipeline"}, "parallel": {"parallel"},
        "funnel": {"funnel", "final"}}
MAX_DEPTH = 64


def _kind(node: dict[str, Any], where: str) -> str:
    kinds = [k for k in KINDS if k in node]
    if len(kinds) != 1:
        raise UsageError(f"{where}: give exactly one of {', '.join(KINDS)}")
    extra = sorted(set(node) - KEYS[kinds[0]])
    if extra:
        raise UsageError(f"{where}: unknown key(s) {', '.join(extra)} for a {kinds[0]}")
    return kinds[0]


def _children(value: Any, kind: str, where: str, depth: int) -> list[dict]:
    if not isinstance(value, list):
        raise UsageError(f"{where}: {kind} must be a list")
    if kind == "pipeline" and not value:
        raise UsageError(f"{where}: a pipeline needs at least one step")
    return [to_plan(v, f"{where}.{kind}[{i}]", depth + 1) for i, v in enumerate(value)]


def _call(node: dict[str, Any], where: str) -> dict:
    socket, args, kwargs = node["socket"], node.get("args", []), node.get("kwargs", {})
    if not isinstance(socket, str) or not socket:
        raise UsageError(f"{where}: socket must be a socket's name")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise UsageError(f"{where}: args must be a list and kwargs a table")
    return {"t": "call", "socket": socket, "args": args, "kwargs": kwargs}


def to_plan(node: Any, where: str = "workflow", depth: int = 0) -> dict:
    """The engine's plan of a compose node (a socket's name or a table); UsageError naming
    the place for anything malformed."""
    if depth > MAX_DEPTH:
        raise UsageError(f"{where}: nested too deeply")
    if isinstance(node, str):
        return _call({"socket": node}, where)
    if not isinstance(node, dict):
        raise UsageError(f"{where}: expected a socket's name or a table, got {node!r:.60}")
    kind = _kind(node, where)
    if kind == "socket":
        return _call(node, where)
    if kind == "pipeline":
        return {"t": "pipe", "steps": _children(node["pipeline"], kind, where, depth)}
    if kind == "parallel":
        return {"t": "par", "members": _children(node["parallel"], kind, where, depth)}
    if "final" not in node:
        raise UsageError(f"{where}: a funnel needs a final step")
    members = _children(node["funnel"], kind, where, depth)
    return {"t": "pipe", "steps": [{"t": "par", "members": members}, to_plan(node["final"], f"{where}.final",
                                                                          depth + 1)], "label": "funnel"}


def to_spec(plan: dict) -> Any:
    """The compose form of an engine plan (the inverse of :func:`to_plan`)."""
    if plan["t"] == "call":
        args, kwargs = plan.get("args") or [], plan.get("kwargs") or {}
        if not args and not kwargs:
            return plan["socket"]
        return {"socket": plan["socket"], **({"args": args} if args else {}), **({"kwargs": kwargs} if kwargs else {})}
    if plan["t"] == "par":
        return {"parallel": [to_spec(m) for m in plan["members"]]}
    steps = plan["steps"]
    if plan.get("label") == "funnel" and len(steps) == 2 and steps[0]["t"] == "par":
        return {"funnel": [to_spec(m) for m in steps[0]["members"]], "final": to_spec(steps[1])}
    return {"pipeline": [to_spec(s) for s in steps]}


def sockets(plan: dict) -> list[str]:
    """The sockets a plan calls, in plan order, each once."""
    return list(dict.fromkeys(node["socket"] for _, node in wfp.leaves(plan)))


# -- the store ---------------------------------------------------------------------------------

def _check_sockets(name: str, plan: dict) -> None:
    from .store.models import Socket

    known = {s.name for s in Socket.select(Socket.name).where(Socket.name.in_(sockets(plan)))}
    missing = [s for s in sockets(plan) if s not in known]
    if missing:
        raise NotFound(f"workflow {name}: unknown socket {missing[0]!r} (see 'ec ls sockets')")


def define(name: str, plan: dict) -> str:
    """Store (or replace) the workflow ``name``; "created", "updated" or "unchanged". Its
    sockets must exist; UsageError (exit 2) otherwise, nothing stored."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UsageError("a workflow needs a name")
    wfp.validate(plan)
    _check_sockets(name, plan)
    text = json.dumps(plan, sort_keys=True)
    row = NamedWorkflow.get_or_none(NamedWorkflow.name == name)
    if row is not None and row.plan == text:
        return "unchanged"
    require("ADD_SCHEDULE" if row is None else "UPDATE_SCHEDULE")
    if row is None:
        NamedWorkflow.create(name=name, plan=text)
        return "created"
    from .store.models import now

    NamedWorkflow.update(plan=text, updated=now()).where(NamedWorkflow.id == row.id).execute()
    return "updated"


def plan_of(name: str) -> dict:
    """The stored plan of workflow ``name`` (NotFound, exit 2, if there is none)."""
    row = None if "\x00" in name else NamedWorkflow.get_or_none(NamedWorkflow.name == name)
    if row is None:
        raise NotFound(f"unknown workflow {name!r} (see 'ec ls workflows'; ec compose defines them)")
    return json.loads(row.plan)


def list_workflows() -> list[dict[str, Any]]:
    """Every named workflow: its name, kind (label) and sockets (``ec ls workflows``)."""
    require("READ_SCHEDULE")
    out = []
    for row in NamedWorkflow.select().order_by(NamedWorkflow.name):
        plan = json.loads(row.plan)
        out.append({"name": row.name, "kind": wfp.label(plan), "sockets": " ".join(sockets(plan)),
                    "spec": to_spec(plan)})
    return out


def show(name: str) -> dict[str, Any]:
    """One named workflow: its kind, sockets, compose form, plan and the schedules that
    start it (``ec show workflow NAME``)."""
    require("READ_SCHEDULE")
    from .store.schedules import Schedule

    plan = plan_of(name)
    users = [s.name for s in Schedule.select(Schedule.name).where(Schedule.workflow == name).order_by(Schedule.name)]
    return {"name": name, "kind": wfp.label(plan), "sockets": sockets(plan), "spec": to_spec(plan), "plan": plan,
            "schedules": users}


def delete(name: str) -> None:
    """Remove a named workflow no schedule starts (Conflict, exit 2, otherwise)."""
    require("DELETE_SCHEDULE")
    from .errors import Conflict
    from .store.models import db
    from .store.schedules import Schedule

    with db.atomic():
        plan_of(name)
        users = [s.name for s in Schedule.select(Schedule.name).where(Schedule.workflow == name)]
        if users:
            raise Conflict(f"workflow {name!r} is started by schedule(s) {', '.join(sorted(users))}: "
                           "delete or update them first")
        NamedWorkflow.delete().where(NamedWorkflow.name == name).execute()


def compose_apply(item: dict[str, Any]) -> str:
    """One ``[[workflow]]`` table of a compose file."""
    spec = {k: v for k, v in item.items() if k != "name"}
    return define(item["name"], to_plan(spec, f"workflow {item['name']}"))


def compose_rows() -> list[dict[str, Any]]:
    """Every named workflow as a ``[[workflow]]`` table of ``ec compose export``."""
    out = []
    for row in NamedWorkflow.select().order_by(NamedWorkflow.name):
        spec = to_spec(json.loads(row.plan))
        out.append({"name": row.name, **(spec if isinstance(spec, dict) else {"socket": spec})})
    return out


def with_input(plan: dict, args: list, kwargs: dict) -> dict:
    """A copy of ``plan`` whose first calls (those that start with the workflow) get
    ``args`` before their own and ``kwargs`` over theirs: a schedule's arguments (pure)."""
    if not args and not kwargs:
        return plan
    out = json.loads(json.dumps(plan))
    for path, _, _ in wfp.start(out, [], False).calls:
        node = wfp.node_at(out, path)
        node["args"] = [*args, *node.get("args", [])]
        node["kwargs"] = {**node.get("kwargs", {}), **kwargs}
    return out
