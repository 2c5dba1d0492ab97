"""`pytest -m faults`: every scenario under the checker; lost = duplicated = 0.

A scenario's kind names its transport (``sqlite`` or ``amqp``) and, after ``+pg``, a
PostgreSQL store instead of the embedded SQLite one.
"""

from __future__ import annotations

import pytest

from fault_scenarios import SCENARIOS, cleanup, setup
from history import Report

pytestmark = [pytest.mark.faults, pytest.mark.slow]
CASES = [(name, kind) for name, (_, kinds) in SCENARIOS.items() for kind in kinds]


@pytest.mark.parametrize("name, kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_scenario(name, kind, tmp_path, request, capsys):
    transport, _, store = kind.partition("+")
    broker = f"sqlite:///{tmp_path / 'queue.db'}" if transport == "sqlite" else request.getfixturevalue("amqp_url")
    db_url = request.getfixturevalue("pg_url") if store == "pg" else None
    ctx = setup(tmp_path / "s", broker, db_url=db_url)
    try:
        report = SCENARIOS[name][0](ctx)
    finally:
        from ectool.store import close_store

        cleanup(ctx)
        close_store()
    with capsys.disabled():
        print(f"\n{Report.header()}\n{report.line()}")
    assert report.confirmed > 0
    assert (report.lost, report.duplicated, report.unexpected) == (0, 0, 0), report
