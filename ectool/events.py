"""The event bus: lifecycle events that make ``ec listen``, ``ec top`` and ``ec dash`` live.

Publishing never slows the caller: :func:`emit` appends a small dict to a bounded
in-process buffer (when it is full the oldest event is dropped and counted) and a
background thread sends what accumulated every few tens of milliseconds, over a transport
connection of its own. Events are not durable and may be lost; the store stays the source
of truth, and every figure ``ec stats`` shows is computed from it.

An event is a JSON object ``{"time", "kind", "host", "pid", ...}``: ``time`` is seconds
since the epoch, ``kind`` one of :data:`KINDS`, and the other fields depend on the kind
(``call`` and ``socket`` for call events, ``processor``, ``cpu_percent`` and ``rss_mb``
for worker heartbeats, ...). On RabbitMQ events go to the topic exchange ``ec.events``
(``ec.NAMESPACE.events``) with the kind as routing key; on the embedded transport to the
``events`` table of the queue file, with wake-ups for subscribers.

``EC_EVENTS=0`` turns publishing off (benchmarks).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket as _socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .config import Config

if TYPE_CHECKING:
    from .transport.base import EventStream, Transport

log = logging.getLogger("ec.events")

KINDS = (
    "call.queued", "call.started", "call.retrying", "call.done", "call.failed", "call.dead",
    "worker.online", "worker.offline", "worker.heartbeat",
    "agent.online", "agent.offline", "agent.lost",
    "processor.deployed", "processor.error",
    "schedule.fired", "schedule.missed",
)
BUFFER = 10_000  # events held in memory at most (drop-oldest beyond)
BATCH_WINDOW = 0.05  # seconds the flusher waits after a send, so events batch up
MAX_RESULT = 4096  # a call.done result travels in the event only when its JSON is this short
HOST = _socket.gethostname()

Event = dict[str, Any]


def exchange_name(namespace: str = "") -> str:
    """The exchange (or embedded table partition) events travel on."""
    return f"ec.{namespace}.events" if namespace else "ec.events"


def patterns(kinds: list[str] | None) -> list[str] | None:
    """Subscription patterns for ``--events`` words: a kind (``call.done``), a topic pattern
    (``call.*``, ``#``), or a family without a dot (``call`` means ``call.*``)."""
    if not kinds:
        return None
    out = []
    for kind in kinds:
        kind = kind.strip()
        if kind:
            out.append(kind if "." in kind or kind in ("#", "*") else f"{kind}.*")
    return out or None


def _wire(event: Event) -> Event:
    """``event`` ready for JSON: a short ``result_json`` becomes a decoded ``result``."""
    raw = event.pop("result_json", None)
    if isinstance(raw, str):
        if len(raw) <= MAX_RESULT:
            try:
                event["result"] = json.loads(raw)
            except ValueError:
                pass
        else:
            event["result_truncated"] = True
    return event


def _dumps(value: Any) -> bytes:
    from .worker.shim import json_bytes

    return json_bytes(json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":")))


def encode(event: Event) -> bytes:
    """The wire form of one event."""
    return _dumps(_wire(event))


def pack(batch: list[Event]) -> list[tuple[str, bytes]]:
    """A flush of events as messages: one per kind (so the topic exchange still routes by
    kind), a JSON object for a single event and an array for several. Under load this
    turns two broker messages per call into two per flush."""
    groups: dict[str, list[Event]] = {}
    for event in batch:
        groups.setdefault(event["kind"], []).append(_wire(event))
    return [(kind, _dumps(events[0] if len(events) == 1 else events))  # one dumps per message
            for kind, events in groups.items()]


def unpack(body: bytes) -> list[Event]:
    """The events in one message (see :func:`pack`); nothing for a malformed one."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return []
    items = value if isinstance(value, list) else [value]
    return [e for e in items if isinstance(e, dict)]


class Bus:
    """A bounded buffer of events and the thread that sends them."""

    def __init__(self, config: Config | None = None, capacity: int = BUFFER) -> None:
        self.config = config
        self.capacity = capacity
        self.enabled = os.environ.get("EC_EVENTS", "1").lower() not in ("0", "off", "no", "false")
        self.buffer: deque[Event] = deque()
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.dropped = 0  # lost to a full buffer or a failed send
        self.sent = 0
        self.closing = False
        self.stopped = threading.Event()  # set by close(): cuts the flusher's pauses short
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self._transport: Transport | None = None
        self._reconnect = False

    def publish(self, kind: str, **fields: Any) -> None:
        """Queue one event; O(1), never blocks on I/O, never raises for a bus problem."""
        if not self.enabled:
            return
        event = {"time": round(time.time(), 3), "kind": kind, "host": HOST, "pid": self.pid,
                 **{k: v for k, v in fields.items() if v is not None}}
        with self.lock:
            if os.getpid() != self.pid:  # forked: the thread and the connection stayed behind
                self._reset()
                event["pid"] = self.pid
            if len(self.buffer) >= self.capacity:
                self.buffer.popleft()
                self.dropped += 1
            self.buffer.append(event)
            if self.idle.is_set():  # under the lock, as the flusher sets it: no race
                self.idle.clear()
            if self.thread is None:
                self._start()
        if not self.wakeup.is_set():  # set() takes a lock and notifies: not once per event
            self.wakeup.set()

    def flush(self, timeout: float = 1.0) -> bool:
        """Wait up to ``timeout`` seconds until every queued event was handed to the transport."""
        self.wakeup.set()
        return self.idle.wait(timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), stop the thread."""
        if self.thread is None:
            return
        self.stopped.set()  # no more batching pauses: send what is left at once
        self.flush(timeout)
        self.closing = True
        self.wakeup.set()
        self.thread.join(timeout)

    # -- the flusher thread --------------------------------------------------------------
    def _reset(self) -> None:
        self.pid = os.getpid()
        self.buffer.clear()
        self.thread, self._transport = None, None
        self.lock = threading.Lock()

    def _start(self) -> None:
        self.closing = False
        self.stopped.clear()
        self.thread = threading.Thread(target=self._run, name="ec-events", daemon=True)
        self.thread.start()
        atexit.register(self.close, 1.0)

    def _run(self) -> None:
        pause = 0.5
        while not self.closing:
            self.wakeup.wait(1.0)
            self.wakeup.clear()
            with self.lock:
                batch = list(self.buffer)
                self.buffer.clear()
            if batch:
                if self._send(batch):
                    pause = 0.5
                else:
                    self.stopped.wait(pause)  # the transport is down: events queue (and drop)
                    pause = min(pause * 2, 5.0)
            with self.lock:
                if not self.buffer:
                    self.idle.set()
            if batch:
                self.stopped.wait(BATCH_WINDOW)
        if self._transport is not None:
            try:
                self._transport.close()
            except Exception:  # noqa: BLE001 - shutting down
                pass

    def _send(self, batch: list[Event]) -> bool:
        try:
            if self._reconnect and self._transport is not None:
                self._reconnect = False
                self._transport.close()
                self._transport = None
            if self._transport is None:
                from .config import load
                from .transport import open_transport

                if self.config is None:
                    self.config = load()
                self._transport = open_transport(self.config)
            wire = pack(batch)
            self._transport.publish_events(exchange_name(self.config.namespace), wire)  # type: ignore[union-attr]
            self.sent += len(batch)
            return True
        except Exception as exc:  # noqa: BLE001 - the bus must never take its process down
            self.dropped += len(batch)
            log.debug("dropped %d event(s): %s", len(batch), exc)
            transport, self._transport = self._transport, None
            if transport is not None:
                try:
                    transport.close()
                except Exception:  # noqa: BLE001
                    pass
            return False


_bus: Bus | None = None


def bus() -> Bus:
    """This process's bus (created on first use)."""
    global _bus
    if _bus is None:
        _bus = Bus()
    return _bus


def configure(config: Config) -> None:
    """Publish on ``config``'s broker and namespace (default: the environment's)."""
    b = bus()
    if b.config is None or (b.config.broker, b.config.namespace) != (config.broker, config.namespace):
        b.config = config
        b._reconnect = True  # the flusher closes the old connection and opens the new one


def emit(kind: str, **fields: Any) -> None:
    """Publish an event (``emit("call.done", call=cid, socket=name, ms=12.5)``); fields that
    are None are left out. Cheap and safe on any hot path."""
    bus().publish(kind, **fields)


_me = None


def heartbeat(**fields: Any) -> None:
    """Emit ``worker.heartbeat`` with this process's cpu% since the last one, its RSS and
    how many events this process dropped so far."""
    global _me
    import psutil

    try:
        if _me is None or _me.pid != os.getpid():
            _me = psutil.Process()
            _me.cpu_percent(None)
        usage = {"cpu_percent": round(_me.cpu_percent(None), 1),
                 "rss_mb": round(_me.memory_info().rss / 2**20, 1)}
    except psutil.Error:
        usage = {}
    emit("worker.heartbeat", **usage, dropped=bus().dropped or None, **fields)


# -- subscribing -------------------------------------------------------------------------


class Subscription:
    """Events as dicts, from now on; reconnects by itself after the broker went away
    (:attr:`problem` says why it is waiting)."""

    def __init__(self, config: Config, kinds: list[str] | None = None,
                 match: Callable[[Event], bool] | None = None) -> None:
        self.config = config
        self.patterns = patterns(kinds)
        self.match = match
        self.problem: str | None = None
        self._transport: Transport | None = None
        self._stream: EventStream | None = None
        self._retry_at = 0.0
        self._pending: deque[Event] = deque()  # the rest of a packed message
        self._open()  # the first connection's failure is the caller's (exit 3)

    def _open(self) -> None:
        from .transport import open_transport

        self._transport = open_transport(self.config)
        try:
            self._stream = self._transport.subscribe_events(exchange_name(self.config.namespace),
                                                            self.patterns)
        except Exception:
            self._transport.close()
            self._transport = None
            raise
        self.problem = None

    def _drop(self, reason: str) -> None:
        self.problem = reason
        self._retry_at = time.monotonic() + 1.0
        for thing in (self._stream, self._transport):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
        self._stream = self._transport = None

    def get(self, timeout: float | None = None) -> Event | None:
        """The next matching event, or None after ``timeout`` seconds."""
        from .errors import EcError

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._pending:
                event = self._pending.popleft()
                if self.match is None or self.match(event):
                    return event
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if self._stream is None:
                wait = self._retry_at - time.monotonic()
                if wait > 0:
                    time.sleep(wait if left is None else min(wait, left))
                    continue
                try:
                    self._open()
                except EcError as exc:
                    self._drop(str(exc))
                    continue
            try:
                body = self._stream.get(timeout=1.0 if left is None else min(left, 1.0))  # type: ignore[union-attr]
            except EcError as exc:
                self._drop(str(exc))
                continue
            if body is not None:
                self._pending.extend(unpack(body))

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get()
            if event is not None:
                yield event

    def close(self) -> None:
        self._drop("closed")

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subscribe(kinds: list[str] | None = None, timeout: float | None = None, *,
              config: Config | None = None,
              match: Callable[[Event], bool] | None = None) -> Iterator[Event]:
    """Yield events published from now on (kinds or patterns as in :func:`patterns`), until
    ``timeout`` seconds have passed (None: for ever)."""
    from .config import load

    sub = Subscription(config or load(), kinds, match)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            event = sub.get(left)
            if event is not None:
                yield event
    finally:
        sub.close()
