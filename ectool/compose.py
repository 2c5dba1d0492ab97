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

    [[schedule]]
    name = "nightly"
    socket = "pyfi.processors.sample.do_something"
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
    "schedule": {"name": str, "socket": str, "every": (str, int, float), "cron": str, "timezone": str,
                 "args": list, "kwargs": dict, "catch_up": str, "jitter": (str, int, float)},
}
REQUIRED = {"queue": ("name",), "processor": ("name", "gitrepo", "module"),
            "socket": ("name", "queue", "processor", "task"), "plug": ("name", "source", "target"),
            "schedule": ("name", "socket")}


def parse(text: str | bytes, origin: str = "compose file") -> dict[str, Any]:
    """Parse and validate a compose document, text or UTF-8 bytes (one-line errors for
    every problem)."""
    try:
        doc = tomllib.loads(text.decode() if isinstance(text, bytes) else text)
    except UnicodeDecodeError as exc:
        raise UsageError(f"malformed {origin}: not UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"malformed {origin}: {exc}") from None
    except RecursionError:
        raise UsageError(f"malformed {origin}: nested too deeply") from None
    unknown = sorted(set(doc) - set(FIELDS) - {"trust"})
    if unknown:
        raise UsageError(f"{origin}: unknown section(s) {', '.join(unknown)}")
    trust = doc.get("trust", [])
    if not isinstance(trust, list) or not all(isinstance(t, str) for t in trust):
        raise UsageError(f"{origin}: trust must be a list of strings")
    for kind, fields in FIELDS.items():
        items = doc.get(kind, [])
        if not isinstance(items, list):
            raise UsageError(f"{origin}: use [[{kind}]] tables")
        for i, item in enumerate(items):
            where = f"{origin}: {kind} #{i + 1}"
            bad = sorted(set(item) - set(fields))
            if bad:
                raise UsageError(f"{where}: unknown key(s) {', '.join(bad)}")
            for key in REQUIRED[kind]:
                if key not in item:
                    raise UsageError(f"{where}: missing {key}")
            for key, value in item.items():
                if not isinstance(value, fields[key]) or isinstance(value, bool):
                    raise UsageError(f"{where}: {key} has the wrong type ({value!r})")
    return doc


def _sync(model, row, wanted: dict[str, Any]) -> bool:
    """Set changed fields on an existing row; True if anything changed."""
    changed = False
    for key, value in wanted.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    if changed:
        row.save()
    return changed


def apply(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Create or update every object in ``doc`` in one transaction; report what changed."""
    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}

    def note(kind: str, name: str, what: str) -> None:
        report[what].append(f"{kind} {name}")

    with db.atomic():
        for pattern in doc.get("trust", []):
            if Trust.get_or_none(Trust.pattern == pattern) is None:
                network.add_trust(pattern)
                note("trust", pattern, "created")
            else:
                note("trust", pattern, "unchanged")
        for q in doc.get("queue", []):
            row = Queue.get_or_none(Queue.name == q["name"])
            if row is None:
                network.add_queue(q["name"], q.get("type", "direct"), queue_type=q.get("queue_type", "quorum"),
                                  max_length=q.get("max_length"))
                note("queue", q["name"], "created")
            else:
                note("queue", q["name"], "updated" if _sync(Queue, row, {k: v for k, v in q.items() if k != "name"})
                     else "unchanged")
        for p in doc.get("processor", []):
            row = Processor.get_or_none(Processor.name == p["name"])
            rest = {k: v for k, v in p.items() if k not in ("name", "gitrepo", "module")}
            if row is None:
                network.add_processor(p["name"], p["gitrepo"], p["module"], **rest)
                note("processor", p["name"], "created")
            else:
                note("processor", p["name"], "updated" if _sync(Processor, row, {k: v for k, v in p.items()
                                                                                 if k != "name"}) else "unchanged")
        for s in doc.get("socket", []):
            row = Socket.get_or_none(Socket.name == s["name"])
            opts = {k: s[k] for k in ("concurrency", "retries", "backoff", "timeout") if k in s}
            if row is None:
                network.add_socket(s["name"], s["queue"], s["processor"], s["task"], **opts)
                note("socket", s["name"], "created")
            else:
                wanted = {"task": s["task"], "queue": network.get(Queue, s["queue"]),
                          "processor": network.get(Processor, s["processor"]), **opts}
                note("socket", s["name"], "updated" if _sync(Socket, row, wanted) else "unchanged")
        for p in doc.get("plug", []):
            row = Plug.get_or_none(Plug.name == p["name"])
            if row is None:
                network.add_plug(p["name"], p["source"], p["target"], p.get("argument"), p.get("on", "result"))
                note("plug", p["name"], "created")
            else:
                wanted = {"source": network.get(Socket, p["source"]), "target": network.get(Socket, p["target"]),
                          "argument": p.get("argument"), "fires_on": p.get("on", "result")}
                note("plug", p["name"], "updated" if _sync(Plug, row, wanted) else "unchanged")
        if doc.get("schedule"):
            from . import schedules

            for item in doc["schedule"]:
                note("schedule", item["name"], schedules.compose_apply(item))
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
    from . import schedules

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
