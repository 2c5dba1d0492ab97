"""Run N worker processes and keep them running (restart with backoff after a crash).

States follow supervisor's model (:mod:`ectool.backoff`): a child that dies is restarted
after an exponentially growing delay; one that stayed up for ``HEALTHY`` seconds resets its
backoff; ``ec worker`` never gives up on a child. SIGTERM
or SIGINT stops every child gracefully (SIGTERM, then SIGKILL after ``grace``). Children
stop as on SIGTERM when the supervisor dies, however it died (:mod:`ectool.parentdeath`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .backoff import Backoff
from .parentdeath import die_with_parent


@dataclass
class Child:
    slot: int
    proc: subprocess.Popen | None = None
    life: Backoff = field(default_factory=Backoff)
    history: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, argv: Sequence[str], count: int, *, env: dict[str, str] | None = None,
                 grace: float = 30.0, log=None) -> None:
        self.argv, self.count, self.env, self.grace = list(argv), count, env, grace
        # children die with the supervisor, even one killed with SIGKILL: the kernel's
        # parent-death signal, and their parent watch (EC_PARENT_PID) as a fallback
        self.env = dict(os.environ if env is None else env, EC_PARENT_PID=str(os.getpid()))
        self.preexec = die_with_parent()
        self.children = [Child(i) for i in range(count)]
        self.stopping = False
        self.log = log or (lambda msg: print(f"ec worker: {msg}", file=sys.stderr, flush=True))

    def _start(self, child: Child) -> None:
        child.proc = subprocess.Popen(self.argv, env=self.env, preexec_fn=self.preexec)
        child.life.start(time.monotonic())

    def stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for c in self.children:
            self._start(c)
        self.log(f"started {self.count} worker process(es): {' '.join(str(c.proc.pid) for c in self.children if c.proc)}")
        while not self.stopping:
            now = time.monotonic()
            for c in self.children:
                if c.proc is not None and c.proc.poll() is not None:
                    code = c.proc.returncode
                    delay = c.life.exit(now)
                    self.log(f"worker {c.proc.pid} exited with {code}; restarting in {delay:.1f}s")
                    c.history.append(code)
                    c.proc = None
                if c.proc is None and c.life.due(now):
                    self._start(c)
            time.sleep(0.1)
        return self.shutdown()

    def shutdown(self) -> int:
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return 0
