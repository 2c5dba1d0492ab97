"""The import-time budget of the hot paths that rely on lazy imports or stand-ins.

``ec run SOCKET WORD...`` (ectool/cli/fast.py) skips click; the ``ec`` group imports its
commands lazily; pika_lean leaves pika's asyncio adapter out; peewee_lean leaves
psycopg2 out on a SQLite store. Each holds only while nobody adds a top-level import
that undoes it: these tests import the path in a fresh interpreter and assert on the
set of top-level packages it loaded (never on time), so such an import fails here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = {"click", "textual", "rich", "psycopg2", "pika", "peewee", "git", "psutil", "asyncio", "sqlite3"}
LEAN_PIKA = "from ectool import pika_lean; pika_lean.lean = True; "
LEAN_PEEWEE = "from ectool import peewee_lean; peewee_lean.lean = True; peewee_lean.store_known('sqlite:///x.db'); "


@pytest.mark.parametrize("code, allowed", [
    ("import ectool.cli.fast", set()),                       # `ec run SOCKET WORD...`
    ("import ectool.cli", set()),                            # the lazy click group: `ec --help`
    ("import ectool.transport.base", set()),
    (LEAN_PIKA + "pika_lean.import_pika()", {"pika"}),       # no asyncio
    (LEAN_PIKA + "import ectool.transport.amqp", {"pika"}),
    (LEAN_PEEWEE.rstrip("; "), {"peewee", "sqlite3"}),       # no psycopg2
    (LEAN_PEEWEE + "import ectool.transport.sqlite", {"peewee", "sqlite3"}),
])
def test_hot_path_imports_no_heavy_module(code, allowed):
    probe = code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert loaded & HEAVY == allowed, f"{code!r} imported {sorted(loaded & HEAVY - allowed)}"
