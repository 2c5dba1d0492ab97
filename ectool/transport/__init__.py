"""Choose a transport implementation by URL scheme (imports pika only for amqp://)."""

from __future__ import annotations

from ..config import Config
from .base import (
    DEAD_QUEUE,
    REDELIVERED,
    Consumer,
    DeadLetter,
    Delivery,
    EventStream,
    Inbox,
    Transport,
)

__all__ = ["DEAD_QUEUE", "REDELIVERED", "Consumer", "DeadLetter", "Delivery", "EventStream", "Inbox", "Transport",
           "open_transport", "connect"]


def connect(url: str, *, delivery_limit: int = 5) -> Transport:
    """Open a transport for ``url`` (``sqlite:///path`` or ``amqp://...``)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from .sqlite import SqliteTransport

        return SqliteTransport(url, delivery_limit=delivery_limit)
    if scheme in ("amqp", "amqps"):
        from .amqp import AmqpTransport

        return AmqpTransport(url, delivery_limit=delivery_limit)
    from ..errors import ConfigError

    raise ConfigError(f"unsupported broker URL {url!r}")


#: the queue-level delivery limit is a backstop above the worker's own check: workers count
#: attempts that crashed in the store (exact), while brokers also count returns of
#: deliveries that never started (prefetched, then handed back on a graceful stop)
BACKSTOP = 10


def open_transport(config: Config) -> Transport:
    """The transport named by a resolved configuration."""
    return connect(config.broker, delivery_limit=config.delivery_limit * 2 + BACKSTOP)
