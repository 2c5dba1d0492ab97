"""The agent's schedule thread: fires due ticks (:func:`ectool.scheduler.fire_due`) on its
own store connection and broker connection, so a slow round of the agent (a deployment, a
git clone) never makes a tick late; it sleeps until the next tick is due, at most
``interval``. Every :data:`RECOVER_EVERY` seconds it also publishes again the calls of
pipelined submitters that died on this host before sending them
(:func:`ectool.submitter.recover`). Any error is logged and the round retried with fresh connections."""

from __future__ import annotations

import sys
import threading
import time

from ectool import scheduler, submitter
from ectool.config import Config
from ectool.publisher import Publisher
from ectool.store import reconnect

#: seconds between recoveries of dead submitters' unsent calls
RECOVER_EVERY = 30.0


def log(msg: str) -> None:
    print(f"ec-agentd: {msg}", file=sys.stderr, flush=True)


class ScheduleLoop(threading.Thread):
    def __init__(self, config: Config, agent: str, interval: float) -> None:
        super().__init__(name="schedules", daemon=True)
        self.config, self.agent, self.interval = config, agent, interval
        self.stopping = threading.Event()
        self.failing = False

    def run(self) -> None:
        from ectool.transport import open_transport

        transport = publisher = None
        recovered = 0.0
        while not self.stopping.is_set():
            wait = self.interval
            try:
                if transport is None or publisher is None:
                    transport = open_transport(self.config)
                    publisher = Publisher(transport, self.config.namespace)
                soonest = scheduler.fire_due(publisher, self.agent, self.config.max_message_bytes)
                if time.monotonic() - recovered >= RECOVER_EVERY:
                    submitter.recover(self.config, transport)
                    recovered = time.monotonic()
                if soonest is not None:
                    wait = max(0.02, min(wait, soonest))
                if self.failing:
                    log("schedules: firing again")
                    self.failing = False
            except Exception as exc:  # noqa: BLE001 - an outage: ticks wait, the next round retries
                if not self.failing:
                    text = str(exc).strip().splitlines()
                    log(f"schedules: {text[0] if text else type(exc).__name__}; retrying")
                    self.failing = True
                reconnect()
                if transport is not None:
                    try:
                        transport.close()
                    except Exception:  # noqa: BLE001, S110 - it is being replaced
                        pass
                transport = publisher = None
            self.stopping.wait(wait)
        reconnect()  # this thread's store connection
        if transport is not None:
            try:
                transport.close()
            except Exception:  # noqa: BLE001, S110 - stopping anyway
                pass

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
