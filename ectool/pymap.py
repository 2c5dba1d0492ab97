"""``Socket.map`` and ``Socket.starmap``: ``ec map`` in Python (Celery's map/starmap/chunks).

One call per item, results yielded in input order as they can be released. The same
streaming core as ``ec map`` (:class:`~ectool.mapper.Mapper`) runs in a thread with a
client of its own (its own broker connection and inbox): items are submitted in bundled
batches, at most ``window`` calls are in flight and at most ``window`` results wait for
the caller, so a long or endless iterable runs in bounded memory. A failed call raises
:class:`~ectool.api.RemoteError` when its turn comes (:mod:`ectool.api` turns outcomes
into results); closing the generator early cancels
the calls that have not started.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import Any

from .outcome import Outcome

#: calls in flight (and results waiting for the caller) by default
WINDOW = 1000
_END = object()


class _Stopped(BrokenPipeError):
    """The caller stopped reading: the mapper cancels what has not started."""


def _backend(client, socket: str, star: bool):
    from .mapper import ClientBackend

    class Backend(ClientBackend):
        def submit(self, values: list[Any]) -> list[str]:
            calls: list[tuple[list[Any], dict[str, Any]]] = (
                [(list(v), {}) for v in values] if star else [([v], {}) for v in values])
            return self.client.submit(self.socket, calls)

    return Backend(client, socket)


def outcomes(config, socket: str, items: Iterable[Any], *, star: bool = False, window: int = WINDOW,
             timeout: float | None = None) -> Generator[Outcome, None, None]:
    """The outcomes of ``socket`` called on each item (its arguments, with ``star``), in order."""
    from .calls import Client
    from .mapper import Mapper

    client = Client(config, store=False)
    out: queue.Queue = queue.Queue(maxsize=max(1, window))
    stopped = threading.Event()

    def emit(_seq: int, outcome) -> int:
        while not stopped.is_set():
            try:
                out.put(outcome, timeout=0.2)
                return 0
            except queue.Full:
                continue
        raise _Stopped()

    def run() -> None:
        try:
            Mapper(_backend(client, socket, star), socket, window=window, emit=emit, timeout=timeout,
                   decode=lambda item: item).run(items)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            _put(out, exc, stopped)
        finally:
            from .store import reconnect

            reconnect()  # this thread's store connection
            _put(out, _END, stopped)

    thread = threading.Thread(target=run, name="ec-map", daemon=True)
    try:
        client.target(socket)  # an unknown socket fails here, before any item is read
        thread.start()
        while True:
            got = out.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stopped.set()
        if thread.ident is not None:
            thread.join()
        client.close()


def _put(out: queue.Queue, item: Any, stopped: threading.Event) -> None:
    while not stopped.is_set():
        try:
            out.put(item, timeout=0.2)
            return
        except queue.Full:
            continue
