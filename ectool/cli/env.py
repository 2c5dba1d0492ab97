"""The CLI's shared context: resolved configuration and lazily opened store/transport
(click-free: the fast ``ec run`` path uses it too; ``pass_env`` is in :mod:`.group`)."""

from __future__ import annotations

from functools import cached_property

from ..config import Config, load


class Env:
    def __init__(self, db: str | None = None, broker: str | None = None):
        self.flags = {"db": db, "broker": broker}
        self._store_open = False

    @cached_property
    def config(self) -> Config:
        return load(**self.flags)

    def store(self):
        """Open (and on first use create) the store; returns the peewee database."""
        from ..store import open_store

        if not self._store_open:
            open_store(self.config.db, user=self.config.user)
            self._store_open = True

    @cached_property
    def transport(self):
        from ..transport import open_transport

        return open_transport(self.config)

