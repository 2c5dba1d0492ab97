"""The seed's sample processor (``pyfi.processors.sample``) and test helpers.

Every function takes and returns JSON values (bytes allowed), as ElasticCode calls them.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _show(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def do_something(*data):
    """Return a readable trace of the call: ``do_something(a, b)``."""
    print(f"do_something got {len(data)} argument(s)", file=sys.stderr)
    return "do_something(" + ", ".join(_show(d) for d in data) + ")"


def say(text: str) -> str:
    """Print ``text`` to stdout (kept as the call's log, see ec logs) and return it upper-cased."""
    print(f"say: {text}")
    return text.upper()


def do_this(*data):
    return "do_this(" + ", ".join(_show(d) for d in data) + ")"


def do_that(*data):
    return "do_that(" + ", ".join(_show(d) for d in data) + ")"


def add_two(a, b):
    return a + b


def emit_one():
    return 1


def emit_two():
    return 2


def noop(*args, **kwargs):
    return None


def echo(value):
    """Return the argument unchanged (bytes round-trip exactly)."""
    return value


def upper(text: str) -> str:
    return text.upper()


def sleep(seconds: float, value=None):
    time.sleep(float(seconds))
    return value if value is not None else seconds


def boom(message: str = "boom"):
    raise ValueError(message)


def fail_times(counter: str, times: int, value="ok"):
    """Fail the first ``times`` calls counted in file ``counter``, then return ``value``."""
    n = int(open(counter).read() or 0) if os.path.exists(counter) else 0
    with open(counter, "w") as fh:
        fh.write(str(n + 1))
    if n < times:
        raise RuntimeError(f"failure {n + 1} of {times}")
    return value


def fail_times_line(line: str):
    """``fail_times`` for one line of ``ec map``: ``"COUNTER TIMES VALUE"``."""
    counter, times, value = line.split(" ", 2)
    return fail_times(counter, int(times), value)


def crash(how: str = "exit"):
    """End the worker process: 'exit' (os._exit), 'kill' (SIGKILL to itself); or 'thread':
    raise in a thread of its own (the process survives; the traceback is the call's log)."""
    if how == "thread":
        import threading

        def fail():
            raise RuntimeError("uncaught in a thread")

        t = threading.Thread(target=fail, name="doomed")
        t.start()
        t.join()
        return "thread died, call survived"
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(13)


def hog(mib: int, chunk: int = 16):
    """Allocate ``mib`` MiB in ``chunk`` MiB pieces and hold them (memory blow-up)."""
    held = [bytearray(chunk * 2**20) for _ in range(int(mib) // chunk)]
    return sum(len(b) for b in held) // 2**20


def big(n: int) -> str:
    return "x" * int(n)


def whoami():
    return os.getpid()


def total(values, *more):
    """Sum a list of numbers (a funnel's final task), plus any extra numbers."""
    return sum(values) + sum(more)


def mark(directory: str, key: str, seconds: float = 0.0):
    """Record one execution of ``key`` (a line with this pid in DIRECTORY/KEY), then return it.

    The fault-injection checker counts executions per call from these files.
    """
    if seconds:
        time.sleep(float(seconds))
    with open(os.path.join(directory, key), "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return key


def mark_step(count: int, directory: str, key: str, seconds: float = 0.0) -> int:
    """A pipeline step that records its finished executions like :func:`mark` (after
    sleeping SECONDS) and returns COUNT + 1, so a pipeline of N steps returns N."""
    mark(directory, key, seconds)
    return int(count) + 1


def client_api():
    """Import ElasticCode's client API inside a call, as the seed's own processors did: this
    package (``pyfi.processors``) and ElasticCode's ``pyfi.client`` share the namespace
    package ``pyfi``. Returns the module the API's ``parallel`` comes from."""
    import pyfi.client.api

    return pyfi.client.api.parallel.__module__
