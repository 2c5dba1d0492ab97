"""The CLI's shared context: resolved configuration and lazily opened store/transport
(click-free: the fast ``ec run`` path uses it too; ``pass_env`` is in :mod:`.group`)."""

from __future__ import annotations

from functools import cached_property

from ..config import Config, load


class Env:
    def __init__(self, db: str | None = None, broker: str | None = None):
        self.flags = {"db": db, "broker": broker}
        self._store_open = False
        try:
            self.config  # noqa: B018 - resolved now, before any command imports the store
        except Exception:  # noqa: BLE001 - raised again by the first command that needs it
            pass  # (cached_property keeps no failure); `ec config init` may be here to fix it

    @cached_property
    def config(self) -> Config:
        from .. import peewee_lean

        config = load(**self.flags)
        peewee_lean.store_known(config.db)  # before anything imports the store
        return config

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



def changed(env: Env) -> None:
    """Wake agents so they act on the change within a second (best-effort)."""
    from ..agents import notify_agents

    notify_agents(env.config)
