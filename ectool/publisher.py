"""Publishing calls to sockets' queues: name lookup, queue declaration, durable publish.

Shared by the client (:mod:`ectool.calls`) and the workflow engine (:mod:`ectool.engine`,
in clients and in workers), so both declare a queue at most once per process and recover
the same way when it turns out to be missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import NotFound, UsageError
from .store.models import Queue, Socket


def broker_queue(socket_name: str, namespace: str = "") -> str:
    """The transport queue that fronts a socket (``ec.[NAMESPACE.]s.SOCKET``)."""
    return f"ec.{namespace}.s.{socket_name}" if namespace else f"ec.s.{socket_name}"


@dataclass(frozen=True)
class Target:
    socket: str
    task: str
    queue: str
    kind: str
    max_length: int | None


def resolve(socket_name: str, namespace: str = "") -> Target:
    """Look a socket up in the store; an unknown socket is a usage error (exit 2)."""
    # one query, not two; a name with NUL is nobody's (network._name) and PostgreSQL refuses it
    row = None if "\x00" in socket_name else (
        Socket.select(Socket.name, Socket.task, Queue.queue_type, Queue.max_length).join(Queue)
        .where(Socket.name == socket_name).tuples().first())
    if row is None:
        raise NotFound(f"unknown socket {socket_name!r} (see 'ec ls sockets')")
    name, task, queue_type, max_length = row
    return Target(name, task, broker_queue(name, namespace), queue_type, max_length)


class Publisher:
    """Durable publishes to sockets, with each socket looked up once.

    A transport whose publish hands unroutable messages back (``returns_unroutable``:
    RabbitMQ's mandatory flag) declares a queue only when a publish finds it missing,
    then sends those messages again: no declare round trip per process or per workflow.
    Other transports declare each queue before its first use.
    """

    def __init__(self, transport, namespace: str = "") -> None:
        self.transport = transport
        self.namespace = namespace
        self.targets: dict[str, Target] = {}
        self.declared: set[str] = set()
        self.declare_on_miss = transport.returns_unroutable

    def target(self, socket_name: str) -> Target:
        """The socket's target (NotFound if there is none), its queue declared if needed."""
        t = self.targets.get(socket_name)
        if t is None:
            t = self.targets[socket_name] = resolve(socket_name, self.namespace)
        if t.queue not in self.declared and not self.declare_on_miss:
            self.declare(t)
        return t

    def declare(self, t: Target) -> None:
        self.transport.declare(t.queue, kind=t.kind, max_length=t.max_length)
        self.declared.add(t.queue)

    def publish(self, t: Target, bodies: list[bytes], headers: dict | None = None) -> None:
        """Publish durably to ``t``'s queue, declaring it first if it turns out to be missing."""
        try:
            self.transport.publish(t.queue, bodies, **({"headers": headers} if headers else {}))
        except UsageError as exc:
            returned = getattr(exc, "returned", None)
            if not returned or not self.declare_on_miss:
                raise
            self.declare(t)  # the returned messages were not enqueued: send them again
            self.transport.publish(t.queue, returned, **({"headers": headers} if headers else {}))
