"""Restart with backoff: the life of one supervised child, pure (no clock, no process).

Supervisor's model: a child is STARTING until it has stayed up ``healthy`` seconds, then
RUNNING. When it exits it goes to BACKOFF and may be restarted after an exponentially
growing delay; a child that stayed up ``healthy`` seconds starts its count again. After
``max_tries`` quick exits in a row it is FATAL and is not restarted (``None``: never).
Used by ``ec worker`` (:mod:`ectool.supervise`) and the agent (:mod:`agentd.procs`).
"""

from __future__ import annotations

from dataclasses import dataclass

STARTING, RUNNING, BACKOFF, FATAL = "starting", "running", "backoff", "fatal"
HEALTHY = 30.0


def restart_delay(failures: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Delay before restarting a child that has crashed ``failures`` times in a row."""
    return 0.0 if failures <= 0 else min(cap, base * 2 ** (failures - 1))


@dataclass
class Backoff:
    max_tries: int | None = None
    healthy: float = HEALTHY
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    exited: bool = False

    def start(self, now: float) -> None:
        self.started, self.exited = now, False

    def exit(self, now: float) -> float:
        """The child exited at ``now``: count it and return the delay before a restart."""
        self.failures = 1 if now - self.started > self.healthy else self.failures + 1
        delay = restart_delay(self.failures)
        self.restart_at, self.exited = now + delay, True
        return delay

    def state(self, now: float) -> str:
        if not self.exited:
            return RUNNING if now - self.started > self.healthy else STARTING
        if self.max_tries is not None and self.failures >= self.max_tries:
            return FATAL
        return BACKOFF

    def due(self, now: float) -> bool:
        """Should the exited child be started again now?"""
        return self.state(now) == BACKOFF and now >= self.restart_at
