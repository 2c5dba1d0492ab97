"""Shell completion of names from the store (click ``shell_complete`` callbacks).

Completion runs ``ec`` with ``_EC_COMPLETE`` set on every Tab: these callbacks open the
store the command line points at (``--db``, else the usual configuration) and never fail
loudly; an unreachable store simply completes nothing.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

#: kinds ``ec ls`` accepts (besides the named object kinds)
LS_KINDS = ["processors", "sockets", "queues", "plugs", "schedules", "workflows", "nodes", "workers", "agents",
            "users", "roles", "privileges", "trust", "calls", "streams"]
OBJECT_KINDS = ["processor", "socket", "queue", "plug", "schedule", "workflow", "node", "user", "role", "privilege",
                "trust", "stream"]


def _names(ctx: click.Context, kind: str, incomplete: str) -> list[CompletionItem]:
    try:
        from ..config import load
        from ..store import open_store, sqlite_path
        from ..store.models import KINDS
        from ..store.schedules import NamedWorkflow, Schedule
        from ..store.streams import Stream

        root = ctx.find_root().params
        url = load(db=root.get("db_url"), broker=root.get("broker_url")).db
        if url.startswith("sqlite:") and not sqlite_path(url).exists():
            return []  # a Tab must not create a store
        open_store(url, create=False)
        model = {**KINDS, "schedule": Schedule, "workflow": NamedWorkflow, "stream": Stream}[kind]
        field = model.pattern if kind == "trust" else model.name
        query = model.select(field).where(field.startswith(incomplete)).order_by(field).limit(500)
        return [CompletionItem(getattr(row, field.name)) for row in query]
    except Exception:  # noqa: BLE001 - completion must never print a traceback
        return []


def sockets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _names(ctx, "socket", incomplete)


def processors(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _names(ctx, "processor", incomplete)


def nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _names(ctx, "node", incomplete)


def queues(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _names(ctx, "queue", incomplete)


def schedules(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _names(ctx, "schedule", incomplete)


def workflows(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _names(ctx, "workflow", incomplete)


def streams(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _names(ctx, "stream", incomplete)


def ls_kinds(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(k) for k in LS_KINDS if k.startswith(incomplete)]


def object_kinds(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(k) for k in OBJECT_KINDS + ["call"] if k.startswith(incomplete)]


def object_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """NAME after KIND (``ec show socket <Tab>``): names of that kind."""
    kind = (ctx.params.get("kind") or "").lower()
    kind = {"proc": "processor", "q": "queue"}.get(kind, kind)
    if kind not in OBJECT_KINDS and kind.endswith("s"):
        kind = kind[:-1]
    return _names(ctx, kind, incomplete) if kind in OBJECT_KINDS else []
