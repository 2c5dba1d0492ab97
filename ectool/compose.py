"""Declarative networks: apply a TOML description, or export the current network as one.

::

    trust = ["https://github.com/me/*"]

    [[queue]]
    name = "pyfi.queue1"
    type = "direct"

    [[processor]]
    name = "proc1"
    gitrepo = "https://github.com/radiantone/pyfi-processors"
    module = "pyfi.processors.sample"

    [[socket]]
    name = "pyfi.processors.sample.do_something"
    queue = "pyfi.queue1"
    processor = "proc1"
    task = "do_something"
    concurrency = 5

    [[plug]]
    name = "p1"
    source = "pyfi.processors.sample.do_something"
    target = "pyfi.processors.sample.do_this"

    [[workflow]]
    name = "twice"
    pipeline = ["pyfi.processors.sample.do_something", "pyfi.processors.sample.do_this"]

    [[schedule]]
    name = "nightly"
    socket = "pyfi.processors.sample.do_something"    # or: workflow = "twice"
    cron = "30 2 * * *"
    timezone = "Europe/Berlin"
    args = ["report"]

``apply`` runs in one transaction (all or nothing) and is idempotent: applying the same
file twice changes nothing the second time.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from . import network
from .errors import UsageError
from .store.models import Plug, Processor, Queue, Socket, Trust, db

FIELDS: dict[str, dict[str, type | tuple]] = {
    "queue": {"name": str, "type": str, "queue_type": str, "max_length": int},
    "processor": {"name": str, "gitrepo": str, "module": str, "branch": str, "commit": str,
                  "concurrency": int, "host": str, "requested_status": str, "runtime": str},
    "socket": {"name": str, "queue": str, "processor": str, "task": str, "concurrency": int,
               "retries": int, "backoff": (int, float), "timeout": (int, float)},
    "plug": {"name": str, "source": str, "target": str, "argument": str, "on": str},
    "workflow": {"name": str, "pipeline": list, "parallel": list, "funnel": list, "final": (str, dict),
                 "socket": str, "args": list, "kwargs": dict},
    "schedule": {"name": str, "socket": str, "workflow": str, "every": (str, int, float), "cron": str,
                 "timezone": str, "args": list, "kwargs": dict, "catch_up": str, "jitter": (str, int, float),
                 "grace": (str, int, float)},
}
REQUIRED = {"queue": ("name",), "processor": ("name", "gitrepo", "module"),
            "socket": ("name", "queue", "processor", "task"), "plug": ("name", "source", "target"),
            "workflow": ("name",), "schedule": ("name",)}


# -- parsing: decoding (I/O of a kind), then pure checks ---------------------------------------

def _load(text: str | bytes, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text.decode() if isinstance(text, bytes) else text)
    except UnicodeDecodeError as exc:
        raise UsageError(f"malformed {origin}: not UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"malformed {origin}: {exc}") from None
    except RecursionError:
        raise UsageError(f"malformed {origin}: nested too deeply") from None


def item_problem(kind: str, item: Any) -> str | None:
    """What is wrong with one ``[[kind]]`` table, or None (pure)."""
    fields = FIELDS[kind]
    if not isinstance(item, dict):
        return f"use [[{kind}]] tables"
    bad = sorted(set(item) - set(fields))
    if bad:
        return f"unknown key(s) {', '.join(bad)}"
    missing = [key for key in REQUIRED[kind] if key not in item]
    if missing:
        return f"missing {missing[0]}"
    for key, value in item.items():
        if not isinstance(value, fields[key]) or isinstance(value, bool):
            return f"{key} has the wrong type ({value!r})"
    if kind == "workflow":
        from .workflow_defs import to_plan

        try:
            to_plan({k: v for k, v in item.items() if k != "name"}, f"workflow {item['name']}")
        except UsageError as exc:
            return str(exc)
    return None


def problem(doc: dict[str, Any], origin: str = "compose file") -> str | None:
    """The first thing wrong with a decoded compose document, or None (pure)."""
    unknown = sorted(set(doc) - set(FIELDS) - {"trust"})
    if unknown:
        return f"{origin}: unknown section(s) {', '.join(unknown)}"
    trust = doc.get("trust", [])
    if not isinstance(trust, list) or not all(isinstance(t, str) for t in trust):
        return f"{origin}: trust must be a list of strings"
    for kind in FIELDS:
        items = doc.get(kind, [])
        if not isinstance(items, list):
            return f"{origin}: use [[{kind}]] tables"
        for i, item in enumerate(items):
            found = item_problem(kind, item)
            if found:
                return f"{origin}: {kind} #{i + 1}: {found}"
    return None


def parse(text: str | bytes, origin: str = "compose file") -> dict[str, Any]:
    """Parse and validate a compose document, text or UTF-8 bytes (one-line errors for
    every problem)."""
    doc = _load(text, origin)
    found = problem(doc, origin)
    if found:
        raise UsageError(found)
    return doc


# -- applying: what changes (pure), then one function per kind -----------------------------------

def changes(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``wanted`` whose value differs from ``current`` (pure)."""
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def _sync(row, wanted: dict[str, Any]) -> str:
    """Set changed fields on an existing row: "updated", or "unchanged"."""
    changed = changes({k: getattr(row, k) for k in wanted}, wanted)
    for key, value in changed.items():
        setattr(row, key, value)
    if changed:
        row.save()
    return "updated" if changed else "unchanged"


def _trust(pattern: str) -> str:
    if Trust.get_or_none(Trust.pattern == pattern) is not None:
        return "unchanged"
    network.add_trust(pattern)
    return "created"


def _queue(q: dict[str, Any]) -> str:
    row = Queue.get_or_none(Queue.name == q["name"])
    if row is not None:
        return _sync(row, {k: v for k, v in q.items() if k != "name"})
    network.add_queue(q["name"], q.get("type", "direct"), queue_type=q.get("queue_type", "quorum"),
                      max_length=q.get("max_length"))
    return "created"


def _processor(p: dict[str, Any]) -> str:
    row = Processor.get_or_none(Processor.name == p["name"])
    if row is not None:
        return _sync(row, {k: v for k, v in p.items() if k != "name"})
    network.add_processor(p["name"], p["gitrepo"], p["module"],
                          **{k: v for k, v in p.items() if k not in ("name", "gitrepo", "module")})
    return "created"


def _socket(s: dict[str, Any]) -> str:
    row = Socket.get_or_none(Socket.name == s["name"])
    opts: dict[str, Any] = {k: s[k] for k in ("concurrency", "retries", "backoff", "timeout") if k in s}
    if row is not None:
        return _sync(row, {"task": s["task"], "queue": network.get(Queue, s["queue"]),
                           "processor": network.get(Processor, s["processor"]), **opts})
    network.add_socket(s["name"], s["queue"], s["processor"], s["task"], **opts)
    return "created"


def _plug(p: dict[str, Any]) -> str:
    row = Plug.get_or_none(Plug.name == p["name"])
    if row is not None:
        return _sync(row, {"source": network.get(Socket, p["source"]), "target": network.get(Socket, p["target"]),
                           "argument": p.get("argument"), "fires_on": p.get("on", "result")})
    network.add_plug(p["name"], p["source"], p["target"], p.get("argument"), p.get("on", "result"))
    return "created"


def _workflow(item: dict[str, Any]) -> str:
    from . import workflow_defs

    return workflow_defs.compose_apply(item)


def _schedule(item: dict[str, Any]) -> str:
    from . import schedules

    return schedules.compose_apply(item)


#: each kind, in the order it is applied (what a kind refers to comes before it)
APPLY = (("trust", _trust), ("queue", _queue), ("processor", _processor), ("socket", _socket), ("plug", _plug),
         ("workflow", _workflow), ("schedule", _schedule))


def apply(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Create or update every object in ``doc`` in one transaction; report what changed."""
    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
    with db.atomic():
        for kind, apply_one in APPLY:
            for item in doc.get(kind, []):
                report[apply_one(item)].append(f"{kind} {item if kind == 'trust' else item['name']}")
    return report


def export() -> str:
    """The current network as a compose document (TOML)."""
    out: list[str] = ["# ElasticCode network (ec compose export)"]
    trust = [t.pattern for t in Trust.select().order_by(Trust.pattern)]
    if trust:
        out.append(f"trust = [{', '.join(_toml(t) for t in trust)}]")
    tables = {
        "queue": [{"name": q.name, "type": q.type, "queue_type": q.queue_type, "max_length": q.max_length}
                  for q in Queue.select().order_by(Queue.name)],
        "processor": [{"name": p.name, "gitrepo": p.gitrepo, "module": p.module, "branch": p.branch,
                       "commit": p.commit, "concurrency": p.concurrency, "host": p.host,
                       "requested_status": p.requested_status, "runtime": p.runtime}
                      for p in Processor.select().order_by(Processor.name)],
        "socket": [{"name": s.name, "queue": s.queue.name, "processor": s.processor.name, "task": s.task,
                    "concurrency": s.concurrency, "retries": s.retries, "backoff": s.backoff,
                    "timeout": s.timeout} for s in Socket.select().order_by(Socket.name)],
        "plug": [{"name": p.name, "source": p.source.name, "target": p.target.name, "argument": p.argument,
                  "on": p.fires_on} for p in Plug.select().order_by(Plug.name)],
    }
    from . import schedules, workflow_defs

    tables["workflow"] = workflow_defs.compose_rows()
    tables["schedule"] = schedules.compose_rows()
    for kind, rows in tables.items():
        for row in rows:
            out.append(f"\n[[{kind}]]")
            out += [f"{k} = {_toml(v)}" for k, v in row.items() if v is not None]
    return "\n".join(out) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):  # a schedule's arguments
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string
