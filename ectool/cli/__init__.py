"""The ``ec`` command: a thin layer over the ``ectool`` library.

Subcommands load lazily so that ``ec --help`` and ``ec run`` import only what they use; the
commonest command line, ``ec run SOCKET [WORD...]``, runs without click at all
(:mod:`ectool.cli.fast`). Expected failures (:class:`~ectool.errors.EcError`) print one
line and exit with their code. The click group is ``ectool.cli.cli``
(:mod:`ectool.cli.group`, imported on first use).
"""

from __future__ import annotations

import os
import sys

from .commands import COMMANDS, fail, fail_or_raise, store_error

__all__ = ["COMMANDS", "fail", "fail_or_raise", "main", "store_error"]


def __getattr__(name: str):
    if name in ("cli", "LazyGroup", "pass_env"):  # click, only for the commands that use it
        from . import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point for the ``ec`` console script."""
    from .. import peewee_lean, pika_lean

    args = sys.argv[1:] if argv is None else list(argv)
    pika_lean.lean = True  # this process only uses pika's BlockingConnection
    # and peewee with only the driver of its own store, unless it runs tasks in-process
    peewee_lean.lean = peewee_lean.lean_for(args)
    try:
        from . import fast

        simple = fast.simple_run(args, os.environ)
        if simple is not None:
            try:
                fast.run(*simple)
            except Exception as exc:
                fail_or_raise(exc)
        else:
            from .group import cli

            cli.main(args=args, prog_name="ec")
    finally:
        # The process ends here. Leave what it built (modules, the store's and the broker's
        # objects) out of the interpreter's last garbage collections: on a small machine
        # they walked it for ~40-80 ms of every `ec run`. atexit handlers, stdio flushing
        # and objects made from now on are unaffected.
        import gc

        gc.freeze()
