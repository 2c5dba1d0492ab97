"""Import pika without its asyncio adapter, in ElasticCode's own processes.

pika's package ``__init__`` imports its asyncio adapter unconditionally, and with it
asyncio: about 20 ms, a fifth of a whole ``ec run``. ElasticCode only uses
``BlockingConnection`` (over pika's own select loop). So the ``ec`` command line (and
the workers and agents it runs) let pika's ``__init__`` find a stand-in for that module;
afterwards the real one imports normally by its name, and only
``pika.adapters.AsyncioConnection`` is the stand-in (it says why when used). A program
that imports ``ectool`` as a library gets pika whole.
"""

from __future__ import annotations

import sys
import types

ASYNCIO_ADAPTER = "pika.adapters.asyncio_connection"

#: set by the ``ec`` entry point (``ectool.cli.main``); off for library users
lean = False


class AsyncioConnection:
    """Stands in for pika's AsyncioConnection in an ``ec`` process."""

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        raise ImportError("pika's asyncio adapter is left out of ec processes; "
                          f"import {ASYNCIO_ADAPTER} directly")


def import_pika() -> types.ModuleType:
    """``import pika``: without its asyncio adapter when :data:`lean` and pika is not loaded yet."""
    if not lean or "pika" in sys.modules or ASYNCIO_ADAPTER in sys.modules:
        import pika

        return pika
    stub = types.ModuleType(ASYNCIO_ADAPTER, AsyncioConnection.__doc__)
    setattr(stub, "AsyncioConnection", AsyncioConnection)  # noqa: B010 - a module built at run time
    sys.modules[ASYNCIO_ADAPTER] = stub
    try:
        import pika
    finally:
        if sys.modules.get(ASYNCIO_ADAPTER) is stub:
            del sys.modules[ASYNCIO_ADAPTER]
    return pika
