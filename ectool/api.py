"""The Python API: processors, sockets and queues as objects; calls and workflows.

Importing this module starts nothing. The first call opens the configured store and
transport (``EC_DB``/``EC_BROKER``, ec.toml, or the embedded default)::

    from ectool.api import Socket, parallel, pipeline, funnel

    do_something = Socket(name="pyfi.processors.sample.do_something")
    do_something("Hello").get()                  # a call, then its result
    do_something_p = do_something.p              # partial form, as in the seed
    funnel([do_something_p("A"), do_something_p("B")])(do_something_p("C")).get()

Calling a socket returns its handle at once: a submitter thread commits and publishes
calls in batches (``submit = "pipelined"``, the default; ``EC_SUBMIT=sync`` makes every call
durable before it returns). A call is durable once ``h.sent()``, ``h.get()``,
:func:`flush`, leaving ``with batch():`` or interpreter exit has returned; a call that
could not be made durable raises :class:`~ectool.errors.SubmitError` there, naming it.

Remote failures re-raise locally as :class:`RemoteError` with the remote type, message and
traceback.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import CallTimeout, EcError, SubmitError

_lock = threading.Lock()
_client = None


def client():
    """The process-wide client (created on first use)."""
    global _client
    with _lock:
        if _client is None:
            from .calls import Client
            from .config import load

            _client = Client(load())
        return _client


def close() -> None:
    """Close the process-wide client (tests, long-lived programs that reconfigure)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
            _client = None


def flush(timeout: float | None = None) -> None:
    """Until every call submitted so far is durable; :class:`SubmitError` names those that
    could not be made so."""
    if _client is not None:
        _client.flush(timeout)


@contextlib.contextmanager
def batch() -> Iterator[None]:
    """``with batch(): ...``: the calls made inside are durable once the block is left."""
    yield
    flush()


class RemoteError(EcError):
    """A call or workflow failed remotely; carries the remote error's type and traceback."""

    exit_code = 1

    def __init__(self, call_id: str, status: str, error_type: str | None, message: str | None,
                 traceback: str | None) -> None:
        super().__init__(f"{error_type or status}: {message or ''}".rstrip(": "))
        self.call_id, self.status = call_id, status
        self.remote_type, self.remote_message, self.remote_traceback = error_type, message, traceback


class Handle:
    """A submitted call or workflow: ``.id``, ``.status``, ``.sent()``, ``.get(timeout=None)``."""

    def __init__(self, call_id: str, ticket: Any = None) -> None:
        self.id = call_id
        self._ticket = ticket  # a pipelined call's, until it is durable

    def sent(self, timeout: float | None = None) -> Handle:
        """Until the call is durable (committed and published); :class:`SubmitError` if it
        could not be."""
        if self._ticket is not None:
            self._ticket.wait(timeout)
            self._ticket = None
        return self

    @property
    def status(self) -> str:
        from .calls import get_call

        self.sent()
        return get_call(self.id).status

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the outcome; the result, or :class:`RemoteError`, or CallTimeout."""
        self.sent(timeout)
        out = client().wait([self.id], timeout)[self.id]
        if not out.ok:
            raise RemoteError(out.id, out.status, out.error_type, out.error_message, out.traceback)
        return out.result

    def __repr__(self) -> str:
        return f"<Handle {self.id}>"


# -- network objects -----------------------------------------------------------------------

class Queue:
    """A queue, looked up by name or created (``Queue(name="q1", type="direct")``)."""

    def __init__(self, name: str, type: str = "direct") -> None:
        from . import network
        from .store.models import Queue as Row

        client()
        self.row = Row.get_or_none(Row.name == name) or network.add_queue(name, type)
        self.name = name


class Processor:
    """A processor, looked up by name or created from the seed's arguments."""

    def __init__(self, name: str, module: str | None = None, gitrepo: str | None = None,
                 branch: str | None = None, commit: str | None = None, concurrency: int = 1,
                 host: str | None = None) -> None:
        from . import network
        from .store.models import Processor as Row

        client()
        row = Row.get_or_none(Row.name == name)
        if row is None:
            if not (module and gitrepo):
                raise EcError(f"no processor named {name!r} (give module= and gitrepo= to create it)")
            row = network.add_processor(name, gitrepo, module, branch=branch, commit=commit,
                                        concurrency=concurrency, host=host)
        self.row, self.name = row, name


class Socket:
    """A socket; calling it submits a durable call and returns a :class:`Handle`.

    ``Socket(name=..., processor=..., queue={'name': ...}, task='do_something')`` creates
    it when it does not exist yet; ``Socket(name=...)`` looks it up.
    """

    def __init__(self, name: str, processor: Processor | str | None = None,
                 queue: Queue | dict | str | None = None, task: str | None = None,
                 concurrency: int = 1, retries: int = 0, timeout: float | None = None) -> None:
        from . import network
        from .store.models import Socket as Row

        client()
        self.name = name
        if Row.get_or_none(Row.name == name) is None:
            if processor is None or queue is None or task is None:
                raise EcError(f"no socket named {name!r} (give processor=, queue= and task= to create it)")
            qname = queue["name"] if isinstance(queue, dict) else getattr(queue, "name", queue)
            if isinstance(queue, dict):
                Queue(qname, queue.get("type", "direct"))  # type: ignore[arg-type]
            network.add_socket(name, qname, getattr(processor, "name", processor), task,  # type: ignore[arg-type]
                               concurrency=concurrency, retries=retries, timeout=timeout)

    def __call__(self, *args: Any, **kwargs: Any) -> Handle:
        c = client()
        if c.config.submit == "sync":
            return Handle(c.submit(self.name, [(list(args), kwargs)])[0])
        from .submitter import encode

        ticket = c.submitter.put(encode(c, self.name, list(args), kwargs))
        c.expect(ticket.id)
        return Handle(ticket.id, ticket)

    def map(self, items: Iterable[Any], *, window: int = 1000) -> Iterator[Any]:
        """One call per item (``socket(item)``), the results in input order as a generator:
        at most ``window`` calls in flight, submitted in bundled batches (``ec map`` in
        Python). A failed call raises :class:`RemoteError` when its turn comes."""
        from .pymap import outcomes

        return _results(outcomes(client().config, self.name, items, window=window))

    def starmap(self, items: Iterable[Any], *, window: int = 1000) -> Iterator[Any]:
        """As :meth:`map`, each item being the call's arguments (``socket(*item)``)."""
        from .pymap import outcomes

        return _results(outcomes(client().config, self.name, items, star=True, window=window))

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A partial call (signature) for workflows."""
        return Signature(self.name, list(args), kwargs)

    @property
    def p(self):
        """The seed's partial form: ``do_something_p = Socket(...).p; do_something_p("x")``."""
        return self.s

    partial = p


def _results(outcomes: Generator[Any, None, None]) -> Iterator[Any]:
    """Outcomes as results; a failed one raises :class:`RemoteError` (closing the map)."""
    with contextlib.closing(outcomes):
        for out in outcomes:
            if not out.ok:
                raise RemoteError(out.id, out.status, out.error_type, out.error_message, out.traceback)
            yield out.result


class Schedule:
    """A schedule, looked up by name or created: ``Schedule(name="nightly", socket="report",
    cron="0 2 * * *")``, ``Schedule(name="tick", socket="add_two", every="10m", args=[1, 2])``
    or ``Schedule(name="etl", workflow="etl", every="1h")`` (a named workflow: compose's
    ``[[workflow]]``, or :func:`define_workflow`). Fired by the agents (no beat process);
    :meth:`pause` and :meth:`resume` it."""

    def __init__(self, name: str, socket: str | Socket | None = None, every: str | float | None = None,
                 cron: str | None = None, args: list | None = None, kwargs: dict | None = None,
                 catch_up: str = "skip", timezone: str = "UTC", jitter: str | float | None = None,
                 workflow: str | None = None, grace: str | float | None = None) -> None:
        from . import schedules
        from .store.schedules import Schedule as Row

        client()
        self.name = name
        if Row.get_or_none(Row.name == name) is None:
            if socket is None and workflow is None:
                raise EcError(f"no schedule named {name!r} (give socket= or workflow=, and every= or cron=, "
                              "to create it)")
            schedules.add(name, socket if socket is None or isinstance(socket, str) else socket.name,
                          workflow=workflow, every=every, cron=cron, args=args, kwargs=kwargs, catch_up=catch_up,
                          timezone=timezone, jitter=jitter, grace=grace)

    def pause(self) -> None:
        from . import schedules

        schedules.set_paused(self.name, True)

    def resume(self) -> None:
        from . import schedules

        schedules.set_paused(self.name, False)

    def info(self) -> dict[str, Any]:
        """Its fields, next fire times and last outcomes (as ``ec show schedule``)."""
        from . import schedules

        return schedules.show(self.name)

    def delete(self) -> None:
        from . import schedules

        schedules.delete(self.name)


def define_workflow(name: str, workflow: Node) -> str:
    """Store ``workflow`` (a pipeline, parallel or funnel of partials) under ``name`` for
    schedules to start (as compose's ``[[workflow]]``); "created", "updated" or "unchanged"."""
    from . import workflow_defs

    client()
    return workflow_defs.define(name, workflow.plan())


def schedules() -> list[dict[str, Any]]:
    """Every schedule (as ``ec ls schedules --json``)."""
    from . import schedules as lib

    client()
    return lib.list_schedules()


class Function(Socket):
    """The seed's name for a socket used as a function (``Function(name=...).p``)."""


# -- workflows ------------------------------------------------------------------------------

class Node:
    """Something that can run as (part of) a workflow."""

    def plan(self) -> dict:
        raise NotImplementedError

    def delay(self) -> Handle:
        """Submit this workflow durably; returns its handle."""
        import os

        c = client()
        return Handle(c.engine.submit(self.plan(), reply_to=c.inbox.address, flow=os.environ.get("EC_FLOW")))

    def get(self, timeout: float | None = None) -> Any:
        """Submit and wait for the result."""
        return self.delay().get(timeout)


@dataclass
class Signature(Node):
    socket: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)

    def plan(self) -> dict:
        from .messages import to_json_value

        return {"t": "call", "socket": self.socket, "args": to_json_value(self.args),
                "kwargs": to_json_value(self.kwargs)}


def _plan(member: Any) -> dict:
    if isinstance(member, Node):
        return member.plan()
    if isinstance(member, Handle):
        raise EcError("a workflow member must be a partial (use the .p form), not a submitted call")
    raise EcError(f"not a workflow member: {member!r:.60}")


class pipeline(Node):  # noqa: N801 - the seed's spelling
    """Steps in order; each result is prepended to the next step's own arguments."""

    def __init__(self, steps: list) -> None:
        self.steps = list(steps)

    def plan(self) -> dict:
        return {"t": "pipe", "steps": [_plan(s) for s in self.steps]}

    def __call__(self) -> Handle:
        return self.delay()


class parallel(Node):  # noqa: N801
    """Members at once; the list of their results in member order."""

    def __init__(self, members: list) -> None:
        self.members = list(members)

    def plan(self) -> dict:
        return {"t": "par", "members": [_plan(m) for m in self.members]}

    def __call__(self) -> Handle:
        return self.delay()


class funnel(parallel):  # noqa: N801
    """Members in parallel, then a final task with the list prepended (a chord).

    ``funnel([...])(final)`` submits and returns the handle, as the seed uses it.
    """

    def __call__(self, final: Any = None) -> Handle:  # type: ignore[override]
        if final is None:
            return self.delay()
        return _Labelled(pipeline([parallel(self.members), final]), "funnel").delay()


class _Labelled(Node):
    """A node shown under another name in call graphs (a funnel is a pipeline underneath)."""

    def __init__(self, inner: Node, label: str) -> None:
        self.inner, self.label = inner, label

    def plan(self) -> dict:
        return {**self.inner.plan(), "label": self.label}


__all__ = ["Function", "Handle", "Processor", "Queue", "RemoteError", "Schedule", "Socket", "Signature",
           "SubmitError", "batch", "close", "client", "flush", "define_workflow", "funnel", "parallel", "pipeline", "schedules", "CallTimeout"]
