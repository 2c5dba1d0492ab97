"""Building the network: add, list, show, update and delete named objects.

Every function works on the bound store (:func:`ectool.store.open_store`) and raises
:class:`~ectool.errors.EcError` subclasses for bad input, so the CLI, the Python API and
the dashboard share one set of rules. Multi-row changes run in one transaction.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from peewee import IntegrityError, Model

from .errors import Conflict, NotFound, UsageError
from .security import PRIVILEGES, require  # noqa: E402 - re-exported for callers
from .store import grants
from .store.models import (
    KINDS,
    PROCESSOR_REQUESTED,
    QUEUE_TYPES,
    RUNTIMES,
    Node,
    Plug,
    Privilege,
    Processor,
    Queue,
    Role,
    RolePrivilege,
    Socket,
    Trust,
    User,
    UserRole,
    db,
)

ALIASES = {"proc": "processor", "procs": "processor", "q": "queue"}


def kind_model(kind: str) -> type[Model]:
    """The model for a kind name, accepting plurals (``processors``) and short forms."""
    key = kind.lower()
    key = ALIASES.get(key, key)
    if key not in KINDS and key.endswith("s") and key[:-1] in KINDS:
        key = key[:-1]
    if key not in KINDS:
        raise UsageError(f"unknown kind {kind!r}: expected one of {', '.join(sorted(KINDS))}")
    return KINDS[key]


def show(kind: str, name: str) -> dict[str, Any]:
    """One object as a row, for people (checks READ_<KIND>)."""
    model = kind_model(kind)
    require(f"READ_{model.__name__.upper()}")
    return to_row(get(model, name))


def get(kind: str | type[Model], name: str) -> Model:
    """The object of ``kind`` called ``name``; :class:`NotFound` otherwise."""
    model = kind_model(kind) if isinstance(kind, str) else kind
    field = model.pattern if model is Trust else model.name
    obj = model.get_or_none(field == name)
    if obj is None:
        raise NotFound(f"no {model.__name__.lower()} named {name!r}")
    return obj


def to_row(obj: Model) -> dict[str, Any]:
    """A JSON-friendly dict of an object, foreign keys shown by name."""
    row: dict[str, Any] = {}
    for name, field in obj._meta.fields.items():
        if name in ("created", "updated"):
            continue
        value = getattr(obj, field.name + ("_id" if field.__class__.__name__ == "ForeignKeyField" else ""), None)
        if field.__class__.__name__ == "ForeignKeyField" and value is not None:
            target = getattr(obj, name)
            value = getattr(target, "name", value)
        elif value is not None and hasattr(value, "isoformat"):
            value = value.isoformat(timespec="seconds")
        row[name] = value
    if isinstance(obj, Processor):
        row["sockets"] = [s.name for s in obj.sockets.order_by(Socket.name)]
        row["trusted"] = is_trusted(obj.gitrepo)
    row["created"] = obj.created.isoformat(timespec="seconds") if hasattr(obj, "created") else None
    return row


def _create(model: type[Model], **fields: Any) -> Model:
    name = fields.get("name", fields.get("pattern"))
    try:
        with db.atomic():
            return model.create(**fields)
    except IntegrityError as exc:
        text = str(exc).lower()
        if "unique" in text or "duplicate" in text:
            raise Conflict(f"{model.__name__.lower()} {name!r} already exists") from None
        raise UsageError(f"invalid {model.__name__.lower()} {name!r}: {str(exc).splitlines()[0]}") from None


def _positive(name: str, value: int | float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _name(value: str, what: str) -> str:
    if not value or not value.strip() or any(c in value for c in "\0\n\r\t"):
        raise UsageError(f"invalid {what} name {value!r}")
    return value


def add_queue(name: str, type: str = "direct", *, queue_type: str = "quorum",
              max_length: int | None = None, durable: bool = True) -> Queue:
    """Register a queue (its broker queues are declared when sockets on it are used)."""
    require("ADD_QUEUE")
    if type not in QUEUE_TYPES:
        raise UsageError(f"queue type must be one of {', '.join(QUEUE_TYPES)}, got {type!r}")
    if queue_type not in ("quorum", "classic"):
        raise UsageError(f"queue kind must be quorum or classic, got {queue_type!r}")
    _positive("max length", max_length)
    return _create(Queue, name=_name(name, "queue"), type=type, queue_type=queue_type,
                   max_length=max_length, durable=durable)


def add_processor(name: str, gitrepo: str, module: str, *, branch: str | None = None,
                  commit: str | None = None, concurrency: int = 1, host: str | None = None,
                  runtime: str = "python", requested_status: str = "running") -> Processor:
    """Register a processor: a module in a git repository, deployed by agents: ``branch``
    (None: the repository's default branch, its HEAD, as ``git clone`` follows) or ``commit``."""
    require("ADD_PROCESSOR")
    _positive("concurrency", concurrency)
    if not gitrepo:
        raise UsageError("a processor needs a git repository (-g)")
    if runtime not in RUNTIMES:
        raise UsageError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "exec":
        module = module or ""  # a script processor's sockets name files, not functions
    elif not module or not all(part.isidentifier() for part in module.split(".")):
        raise UsageError(f"invalid module name {module!r}")
    return _create(Processor, name=_name(name, "processor"), gitrepo=gitrepo, module=module,
                   branch=branch, commit=commit, concurrency=concurrency, host=host,
                   runtime=runtime, requested_status=requested_status)


def add_socket(name: str, queue: str, processor: str, task: str, *, concurrency: int = 1,
               retries: int = 0, timeout: float | None = None, backoff: float = 1.0) -> Socket:
    """Register a socket: one function of a processor, fronted by a queue."""
    require("ADD_SOCKET")
    _positive("concurrency", concurrency)
    _positive("retries", retries, allow_zero=True)
    _positive("timeout", timeout)
    _positive("backoff", backoff, allow_zero=True)
    with db.atomic():
        q = get(Queue, queue)
        p = get(Processor, processor)
        if p.runtime == "exec":
            if not task or task.startswith("/") or ".." in task.split("/"):
                raise UsageError(f"a script socket's task is a file path inside the repository, got {task!r}")
        elif not task or not task.isidentifier():
            raise UsageError(f"invalid function name {task!r}")
        return _create(Socket, name=_name(name, "socket"), queue=q, processor=p, task=task,
                       concurrency=concurrency, retries=retries, timeout=timeout, backoff=backoff)


def add_plug(name: str, source: str, target: str, argument: str | None = None, on: str = "result") -> Plug:
    """Register a dataflow edge: each outcome of ``source`` becomes a call of ``target``.

    Refuses an edge that would close a cycle (a -> b -> a), which would loop forever.
    """
    from .plugs import creates_cycle

    require("ADD_PLUG")
    if on not in ("result", "error"):
        raise UsageError(f"--on must be result or error, got {on!r}")
    if argument is not None and not argument.isidentifier():
        raise UsageError(f"bad argument name {argument!r}")
    with db.atomic():
        s, t = get(Socket, source), get(Socket, target)
        cycle = creates_cycle(plug_edges(), s.name, t.name)
        if cycle:
            raise UsageError(f"plug {name!r} would close a cycle: {' -> '.join(cycle)}")
        return _create(Plug, name=_name(name, "plug"), source=s, target=t, argument=argument, fires_on=on)


def plug_edges():
    """Every plug as a :class:`~ectool.plugs.Edge`."""
    from .plugs import Edge

    S, T = Socket.alias(), Socket.alias()
    query = (Plug.select(Plug.name, Plug.argument, Plug.fires_on, S.name.alias("s"), T.name.alias("t"))
             .join(S, on=(Plug.source == S.id)).switch(Plug).join(T, on=(Plug.target == T.id)))
    return [Edge(r.name, r.s, r.t, r.argument, r.fires_on) for r in query.objects()]


def add_node(name: str, cpus: int = 1, memory: int | None = None) -> Node:
    require("ADD_NODE")
    _positive("cpus", cpus)
    return _create(Node, name=_name(name, "node"), cpus=cpus, memory=memory)


def add_privilege(name: str) -> Privilege:
    require("ADD_PRIVILEGE")
    if name not in PRIVILEGES:
        raise UsageError(f"unknown privilege {name!r}: see 'ec ls privileges --known'")
    return _create(Privilege, name=name)


def add_role(name: str, privileges: Sequence[str] = ()) -> Role:
    """Create a role holding ``privileges`` (created on demand)."""
    require("ADD_ROLE")
    with db.atomic():
        role = _create(Role, name=_name(name, "role"))
        for priv in privileges:
            if priv not in PRIVILEGES:
                raise UsageError(f"unknown privilege {priv!r}")
            p, _ = Privilege.get_or_create(name=priv)
            RolePrivilege.get_or_create(role=role, privilege=p)
        return role


def add_user(name: str, roles: Sequence[str] = ()) -> User:
    """Add a user holding ``roles``. On PostgreSQL its database role gets the table rights
    those privileges imply (:mod:`ectool.store.grants`); ``user.notes`` says what could not
    be done there."""
    require("ADD_USER")
    with db.atomic():
        user = _create(User, name=_name(name, "user"))
        for r in roles:
            UserRole.create(user=user, role=get(Role, r))
        user.notes = grants.sync([user.name])
        return user


def grant(users: Sequence[str] = ()) -> list[str]:
    """Give the database roles of ``users`` (default: every user) exactly the rights their
    privileges imply, on PostgreSQL (``ec db grant``); return notes for people."""
    require("UPDATE_USER")
    return grants.sync(users or [u.name for u in User.select(User.name)])


def add_trust(pattern: str) -> Trust:
    """Trust repositories whose URL matches ``pattern`` (fnmatch, e.g. ``https://github.com/me/*``)."""
    require("TRUST_REPOSITORY")
    return _create(Trust, pattern=_name(pattern, "pattern"))


def is_trusted(url: str) -> bool:
    """True if a trusted-repository pattern matches ``url``."""
    url = url.split("#", 1)[0]
    return any(fnmatch.fnmatchcase(url, t.pattern) for t in Trust.select())


def list_objects(kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind`` as rows, ordered by name."""
    model = kind_model(kind)
    require(f"READ_{model.__name__.upper()}")
    order = model.pattern if model is Trust else model.name
    return [to_row(o) for o in model.select().order_by(order)]


UPDATABLE = {
    Queue: {"type", "max_length", "queue_type"},
    Processor: {"gitrepo", "module", "branch", "commit", "concurrency", "host", "runtime"},
    Socket: {"task", "concurrency", "retries", "timeout", "backoff", "queue"},
    Node: {"cpus", "memory"},
    Plug: {"argument", "fires_on"},
}


def update(kind: str, name: str, changes: dict[str, str]) -> Model:
    """Change fields of an object; values are strings converted by the field type."""
    model = kind_model(kind)
    require(f"UPDATE_{model.__name__.upper()}")
    allowed = UPDATABLE.get(model, set())
    bad = sorted(set(changes) - allowed)
    if bad:
        raise UsageError(f"cannot update {', '.join(bad)} on a {model.__name__.lower()}"
                         f" (updatable: {', '.join(sorted(allowed)) or 'nothing'})")
    with db.atomic():
        obj = get(model, name)
        for key, raw in changes.items():
            field = model._meta.fields[key]
            if key == "queue":
                value: Any = get(Queue, raw)
            elif raw in ("", "null", "none") and field.null:
                value = None
            else:
                try:
                    value = field.adapt(raw) if field.field_type in ("INT", "FLOAT") else raw
                except (TypeError, ValueError):
                    raise UsageError(f"bad value for {key}: {raw!r}") from None
            setattr(obj, key, value)
        try:
            obj.save()
        except IntegrityError as exc:
            raise UsageError(f"invalid value: {str(exc).splitlines()[0]}") from None
        return obj


def delete(kind: str, name: str, *, cascade: bool = False) -> list[str]:
    """Delete an object; refuses to orphan dependents unless ``cascade``. Returns what went."""
    model = kind_model(kind)
    require("TRUST_REPOSITORY" if model is Trust else f"DELETE_{model.__name__.upper()}")
    with db.atomic():
        obj = get(model, name)
        gone: list[str] = []
        dependents: list[Model] = []
        if isinstance(obj, Processor | Queue):
            dependents = list(obj.sockets)
        elif isinstance(obj, Socket):
            dependents = list(Plug.select().where((Plug.source == obj) | (Plug.target == obj)))
        if dependents and not cascade:
            names = ", ".join(d.name for d in dependents[:5])
            raise UsageError(f"{model.__name__.lower()} {name!r} has {len(dependents)} dependent(s) ({names}); use --cascade")
        for dep in dependents:
            if isinstance(dep, Socket):
                for plug in Plug.select().where((Plug.source == dep) | (Plug.target == dep)):
                    plug.delete_instance()
                    gone.append(f"plug {plug.name}")
            dep.delete_instance()
            gone.append(f"{dep.__class__.__name__.lower()} {dep.name}")
        affected = _holders(obj)
        obj.delete_instance()
        gone.append(f"{model.__name__.lower()} {name}")
        grants.sync(affected)  # their database rights follow
        return gone


def _holders(obj: Model) -> list[str]:
    """The users whose privileges change when ``obj`` goes."""
    if isinstance(obj, User):
        return [obj.name]
    if isinstance(obj, Role):
        return [u.name for u in User.select(User.name).join(UserRole).where(UserRole.role == obj)]
    if isinstance(obj, Privilege):
        return [u.name for u in User.select(User.name)]
    return []


def request_status(processor: str, action: str) -> Processor:
    """Record what a person asked a processor to do (agents reconcile toward it)."""
    target = {"start": "running", "resume": "running", "restart": "running",
              "stop": "stopped", "pause": "paused"}.get(action)
    if target is None:
        raise UsageError(f"unknown action {action!r}")
    require({"stop": "STOP_PROCESSOR", "pause": "PAUSE_PROCESSOR", "resume": "PAUSE_PROCESSOR"}
            .get(action, "START_PROCESSOR"))
    assert target in PROCESSOR_REQUESTED
    with db.atomic():
        proc = get(Processor, processor)
        proc.requested_status = target
        if action == "restart":
            proc.status = "pending"
        proc.save()
        return proc
