"""The sample processor's sockets as the seed imports them::

    from pyfi.client.example.api import do_something_p as do_something

Each ``NAME_p`` is the partial form of socket ``pyfi.processors.sample.NAME`` (the seed's
network, ``ec demo``): calling it makes a workflow member and opens nothing; the store and
broker are opened when a workflow is submitted (``EC_DB``/``EC_BROKER``, ec.toml, or the
embedded default).
"""

from __future__ import annotations

from typing import Any

from ectool.api import Signature

PREFIX = "pyfi.processors.sample."


def _partial(task: str):
    def partial(*args: Any, **kwargs: Any) -> Signature:
        return Signature(PREFIX + task, list(args), kwargs)

    partial.__name__ = partial.__qualname__ = f"{task}_p"
    partial.__doc__ = f"A call of socket {PREFIX}{task} as a workflow member."
    return partial


do_something_p = _partial("do_something")
do_this_p = _partial("do_this")
add_two_p = _partial("add_two")

__all__ = ["add_two_p", "do_something_p", "do_this_p"]
