"""Workflow plans: pipeline / parallel / funnel as data, and how they advance (pure).

A plan is a tree of JSON nodes:

* ``{"t": "call", "socket": S, "args": [...], "kwargs": {...}}`` - one socket call;
* ``{"t": "pipe", "steps": [node, ...]}`` - steps in order, each result prepended to the
  next step's own arguments;
* ``{"t": "par", "members": [node, ...]}`` - members at once (each given the same
  input), their results as a list in member order.

``funnel(members)(final)`` is ``pipe([par(members), final])``: Celery's chord. Every node
has a path (list of child indexes from the root) and a deterministic call id derived from
the workflow id and that path, so re-sending a step after a crash never creates a second
call. The engine (:mod:`ectool.engine`) does the I/O; this module only decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

NAMESPACE = uuid.UUID("6f0f3a52-1d8e-4c7e-9d55-2b1a6a7f0e11")
KIND_NAMES = {"pipe": "pipeline", "par": "parallel"}


def node_id(workflow: str, path: list[int]) -> str:
    """The call id of the node at ``path``: the workflow id itself for the root."""
    if not path:
        return workflow
    return str(uuid.uuid5(NAMESPACE, f"{workflow}/{'.'.join(map(str, path))}"))


def node_at(plan: dict, path: list[int]) -> dict:
    node = plan
    for i in path:
        node = node["steps"][i] if node["t"] == "pipe" else node["members"][i]
    return node


def leaves(plan: dict, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], dict]]:
    """(path, node) of every leaf call of ``plan``, in plan order."""
    if plan["t"] == "call":
        yield path, plan
        return
    for i, child in enumerate(plan.get("steps" if plan["t"] == "pipe" else "members") or []):
        yield from leaves(child, (*path, i))


def validate(node: Any, depth: int = 0) -> None:
    """Refuse malformed plans before anything is submitted."""
    if depth > 64:
        raise UsageError("workflow nested too deeply")
    if not isinstance(node, dict) or node.get("t") not in ("call", "pipe", "par"):
        raise UsageError(f"not a workflow node: {node!r:.80}")
    if node["t"] == "call":
        if not isinstance(node.get("socket"), str):
            raise UsageError("a call node needs a socket name")
        return
    children = node.get("steps" if node["t"] == "pipe" else "members")
    if not isinstance(children, list):
        raise UsageError(f"{KIND_NAMES[node['t']]} needs a list")
    if node["t"] == "pipe" and not children:
        raise UsageError("a pipeline needs at least one step")
    for child in children:
        validate(child, depth + 1)


@dataclass
class Start:
    """What starting a node means: leaf calls to submit, composite nodes to record."""

    calls: list[tuple[list[int], dict, list[Any]]] = field(default_factory=list)  # (path, node, args)
    nodes: list[tuple[list[int], dict]] = field(default_factory=list)  # composite nodes begun
    done: list[tuple[list[int], Any]] = field(default_factory=list)  # nodes complete at once (empty par)


def start(plan: dict, path: list[int], has_input: bool, value: Any = None, out: Start | None = None) -> Start:
    """Begin the node at ``path``, optionally with an input prepended to its arguments."""
    out = out or Start()
    node = node_at(plan, path)
    if node["t"] == "call":
        args = ([value] if has_input else []) + list(node.get("args", []))
        out.calls.append((path, node, args))
    elif node["t"] == "pipe":
        out.nodes.append((path, node))
        start(plan, path + [0], has_input, value, out)
    else:
        out.nodes.append((path, node))
        if not node["members"]:
            out.done.append((path, []))
        for i in range(len(node["members"])):
            start(plan, path + [i], has_input, value, out)
    return out


@dataclass(frozen=True)
class Next:
    """What a finished node leads to."""

    kind: str  # "start" (next pipeline step), "join" (slot of a parallel), "finish" (the root)
    path: list[int]
    value: Any = None
    index: int = 0
    size: int = 0


def after(plan: dict, path: list[int], value: Any) -> Next:
    """The consequence of the node at ``path`` finishing with ``value``.

    For a pipeline step the next step starts with ``value``; the last step finishes the
    pipeline (the caller then asks again for the pipeline's own path). For a parallel
    member, ``value`` fills slot ``index`` of the join at the parent's path.
    """
    if not path:
        return Next("finish", [], value)
    parent_path, index = path[:-1], path[-1]
    parent = node_at(plan, parent_path)
    if parent["t"] == "pipe":
        if index + 1 < len(parent["steps"]):
            return Next("start", parent_path + [index + 1], value)
        return Next("complete", parent_path, value)
    return Next("join", parent_path, value, index, len(parent["members"]))


def label(node: dict) -> str:
    """How a node shows in call graphs: its socket, or the combinator's name."""
    return node["socket"] if node["t"] == "call" else node.get("label") or KIND_NAMES[node["t"]]
