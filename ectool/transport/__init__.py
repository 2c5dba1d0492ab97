"""Choose a transport implementation by URL scheme (imports pika only for amqp://)."""

from __future__ import annotations

from ..config import Config
from .base import DEAD_QUEUE, Consumer, DeadLetter, Delivery, Inbox, Transport

__all__ = ["DEAD_QUEUE", "Consumer", "DeadLetter", "Delivery", "Inbox", "Transport", "open_transport", "connect"]


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


def open_transport(config: Config) -> Transport:
    """The transport named by a resolved configuration."""
    return connect(config.broker, delivery_limit=config.delivery_limit)
