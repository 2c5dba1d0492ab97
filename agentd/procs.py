"""Worker processes of one agent: spawn pinned to a core, restart with backoff, drain.

A slot is one worker process of one processor at one commit. A slot that dies is
restarted after :func:`ectool.backoff.restart_delay`; one that dies ``MAX_CRASHES`` times
in a row (each within ``HEALTHY`` seconds of starting) is given up and reported, so the
agent can mark the processor ``error`` instead of looping (:mod:`ectool.backoff`'s
BACKOFF -> FATAL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ectool.backoff import FATAL, Backoff

MAX_CRASHES = 5


@dataclass
class Slot:
    processor: str
    commit: str
    argv: list[str]
    env: dict[str, str]
    cpu: int | None = None
    proc: subprocess.Popen | None = None
    life: Backoff = field(default_factory=lambda: Backoff(max_tries=MAX_CRASHES))
    draining: bool = False
    drain_deadline: float = 0.0
    last_code: int | None = None


@dataclass
class Fatal:
    processor: str
    commit: str
    failures: int
    last_code: int | None


@dataclass
class Pool:
    cpus: list[int | None]
    grace: float = 30.0
    slots: list[Slot] = field(default_factory=list)

    def free_cpu(self) -> int | None:
        """A core no live worker is pinned to, one nothing uses first. A draining worker's
        core is free: after `ec proc restart` or an update the new workers start while the
        old ones still finish their calls, and must be pinned too."""
        live = {s.cpu for s in self.slots if s.cpu is not None and not s.draining}
        used = {s.cpu for s in self.slots if s.cpu is not None}
        free = [cpu for cpu in self.cpus if cpu is not None and cpu not in live]
        return next((cpu for cpu in free if cpu not in used), free[0] if free else None)

    def start(self, processor: str, commit: str, argv: list[str], env: dict[str, str]) -> Slot:
        slot = Slot(processor, commit, argv, dict(env), cpu=self.free_cpu())
        self._spawn(slot)
        self.slots.append(slot)
        return slot

    def _spawn(self, slot: Slot) -> None:
        env = dict(slot.env)
        if slot.cpu is not None:
            env["EC_CPU"] = str(slot.cpu)
        slot.proc = subprocess.Popen(slot.argv, env=env, start_new_session=False)
        slot.life.start(time.monotonic())
        if slot.cpu is not None:
            try:
                import psutil

                psutil.Process(slot.proc.pid).cpu_affinity([slot.cpu])
            except (AttributeError, OSError, ValueError, ImportError):
                pass  # not every OS allows pinning; the worker still runs

    def stop(self, processor: str, commit: str | None, count: int) -> None:
        """Drain ``count`` workers: SIGTERM now (in-flight calls finish), SIGKILL after grace."""
        live = [s for s in self.slots if s.processor == processor and not s.draining
                and (commit is None or s.commit == commit)]
        for slot in live[-count:] if count else []:
            slot.draining = True
            slot.drain_deadline = time.monotonic() + self.grace
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)

    def actual(self) -> dict[str, dict[str, int]]:
        """processor -> {commit: workers not draining} (crashed ones waiting to restart count)."""
        out: dict[str, dict[str, int]] = {}
        for s in self.slots:
            if not s.draining:
                out.setdefault(s.processor, {}).setdefault(s.commit, 0)
                out[s.processor][s.commit] += 1
        return out

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def poll(self) -> list[Fatal]:
        """Reap exits, restart crashed workers when due, give up on crash loops."""
        now = time.monotonic()
        fatal: list[Fatal] = []
        for s in list(self.slots):
            if s.proc is not None and s.proc.poll() is not None:
                s.last_code = s.proc.returncode
                s.proc = None
                if s.draining:
                    self.slots.remove(s)
                    continue
                delay = s.life.exit(now)
                print(f"ec-agentd: worker of {s.processor} exited with {s.last_code}; "
                      f"restart {s.life.failures} in {delay:.1f}s", file=sys.stderr, flush=True)
                if s.life.state(now) == FATAL:
                    fatal.append(Fatal(s.processor, s.commit, s.life.failures, s.last_code))
                    self.slots.remove(s)
                    continue
            if s.draining and s.proc is not None and now > s.drain_deadline:
                s.proc.kill()
            if s.proc is None and not s.draining and s.life.due(now):
                self._spawn(s)
        return fatal

    def stop_all(self) -> None:
        for s in self.slots:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for s in self.slots:
            if s.proc is None:
                continue
            try:
                s.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
        self.slots.clear()


def cores(count: int | None) -> list[int | None]:
    """The cores this agent may use: the first ``count`` of its allowed CPUs."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        allowed = list(range(os.cpu_count() or 1))
    n = count or len(allowed)
    if n <= len(allowed):
        return list(allowed[:n])
    return list(allowed) + [None] * (n - len(allowed))  # more granted than present: unpinned
