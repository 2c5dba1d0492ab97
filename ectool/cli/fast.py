"""``ec run SOCKET [WORD...]`` without click: the commonest command line, and the one a
shell pipeline pays for on every call, skips the ~25-35 ms of importing click.

Only that exact form qualifies: ``run`` first, then a socket name and words none of which
starts with ``-`` (a lone ``-``, stdin, is allowed). Anything else (an option, ``--``,
``--help``, a global ``--db``, shell completion) goes to the click command, which behaves
the same for this form: both end in :func:`ectool.cli.runner.run_one`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def simple_run(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """``(socket, words)`` when ``argv`` is the plain ``run SOCKET [WORD...]`` form, else None."""
    if len(argv) < 2 or argv[0] != "run" or "_EC_COMPLETE" in environ:
        return None
    socket, words = argv[1], list(argv[2:])
    if not socket or socket.startswith("-") or any(w.startswith("-") and w != "-" for w in words):
        return None
    return socket, words


def run(socket: str, words: list[str]) -> None:
    """What ``ec run SOCKET WORD...`` does, with no options given."""
    from .env import Env
    from .runner import call_values, run_one

    values, stdin_used = call_values(words, has_kwargs=False)
    run_one(Env(), socket, values, {}, no_wait=False, timeout=None, as_json=False, verbose=False,
            stdin_used=stdin_used)
