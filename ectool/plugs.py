"""Plugs, the dataflow edges between sockets: cycle checks and what an outcome triggers.

Pure functions here; :mod:`ectool.engine` does the I/O. A plug without an argument turns
each outcome of its source into one call of its target (the value as the only argument).
Plugs with an argument are a fan-in: the target fires once per *scope* (the shell flow,
else the root call) when every bound argument has arrived, with them as keyword arguments.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

NAMESPACE = uuid.UUID("2c1f1b0e-6f7a-4d8e-8a51-3f0d2a9b7c44")


@dataclass(frozen=True)
class Edge:
    name: str
    source: str
    target: str
    argument: str | None = None
    on: str = "result"


def creates_cycle(edges: list[Edge], source: str, target: str) -> list[str] | None:
    """The path target -> ... -> source if adding source -> target closes a cycle."""
    if source == target:
        return [source, target]
    out: dict[str, list[str]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e.target)
    stack, seen = [(target, [target])], {target}
    while stack:
        node, path = stack.pop()
        if node == source:
            return [source, *path]
        for nxt in out.get(node, []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def plug_call_id(source_call: str, plug: str) -> str:
    """The id of the call a plug makes from one source call (same on every redelivery)."""
    return str(uuid.uuid5(NAMESPACE, f"{source_call}>{plug}"))


def fanin_call_id(scope: str, target: str) -> str:
    """The id of a fan-in target's call within one flow scope."""
    return str(uuid.uuid5(NAMESPACE, f"{scope}=>{target}"))


def fanin_arguments(edges: list[Edge], target: str) -> list[str]:
    """The target's bound argument names, in a stable order (slot numbers)."""
    return sorted({e.argument for e in edges if e.target == target and e.argument})


def triggered(edges: list[Edge], source: str, status: str) -> list[Edge]:
    """The plugs an outcome of ``source`` with ``status`` fires."""
    kind = "result" if status == "done" else "error"
    return [e for e in edges if e.source == source and e.on == kind]
