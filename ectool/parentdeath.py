"""Children that die with their parent (Linux ``PR_SET_PDEATHSIG``).

A worker left behind by a supervisor killed with SIGKILL would keep consuming calls with
parent pid 1 for as long as nobody looks. :func:`die_with_parent` gives ``subprocess.Popen``
a ``preexec_fn`` that asks the kernel to send the child a signal when its parent goes.
The kernel sends it when the *thread* that forked exits, so fork from the main thread (a
supervisor's loop). Where prctl is missing (not Linux) it returns None: workers then rely
on their parent watch alone (``EC_PARENT_PID``, checked between batches).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` sending the child ``sig`` when this process dies, or None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec
