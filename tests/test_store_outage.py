"""Waiting out a store outage: which errors are outages, and the retry loop itself."""

from __future__ import annotations

import pytest
from peewee import IntegrityError, InterfaceError, OperationalError

from ectool.store import close_store, open_store, retrying, transient


@pytest.fixture
def sqlite_store(tmp_path):
    open_store(f"sqlite:///{tmp_path / 'ec.db'}")
    yield
    close_store()


def test_sqlite_lock_and_lost_connections_are_outages_bad_sql_is_not(sqlite_store):
    assert transient(OperationalError("database is locked"))
    assert transient(InterfaceError("connection already closed"))
    assert not transient(OperationalError("no such table: nope"))
    assert not transient(IntegrityError("UNIQUE constraint failed"))
    assert not transient(ValueError("locked"))


def test_retrying_waits_out_an_outage_then_returns(sqlite_store):
    attempts = []

    def step(attempt):
        attempts.append(attempt)
        if attempt < 2:
            raise OperationalError("database is locked")
        return "ok"

    assert retrying(step, what="test") == "ok"
    assert attempts == [0, 1, 2]


def test_retrying_raises_a_real_error_at_once_and_gives_up_when_stopping(sqlite_store):
    calls = []

    def bad(attempt):
        calls.append(attempt)
        raise OperationalError("no such table: nope")

    with pytest.raises(OperationalError, match="no such table"):
        retrying(bad, what="test")
    assert calls == [0]

    def down(attempt):
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError, match="locked"):
        retrying(down, what="test", stop=lambda: True)
