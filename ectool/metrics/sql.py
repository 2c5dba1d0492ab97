"""SQL of the metrics that differs by dialect (SQLite or PostgreSQL), and timestamps as
the drivers return them."""

from __future__ import annotations

import datetime as dt
from typing import Any, overload

from peewee import fn

from ..store.models import on_sqlite


def epoch_sql(field):
    """SQL: seconds since the epoch of a timestamp column."""
    if on_sqlite():
        # a julian day is a double: ~50 µs off at today's dates, so round to milliseconds
        return fn.round((fn.julianday(field) - 2440587.5) * 86400.0, 3)
    return fn.date_part("epoch", field)


def ms_between_sql(start, end):
    """SQL: milliseconds from timestamp ``start`` to timestamp ``end``."""
    if on_sqlite():
        return (fn.julianday(end) - fn.julianday(start)) * 86_400_000.0
    return fn.date_part("epoch", end - start) * 1000.0


def bucket_sql(field, since: float, width: float):
    """SQL: the index of the ``width``-second bucket after ``since`` a timestamp falls in."""
    # half a millisecond of slack: both sides are rounded to milliseconds (see epoch_sql)
    offset = (epoch_sql(field) - (round(since, 3) - 0.0005)) / width
    return offset.cast("INTEGER") if on_sqlite() else fn.floor(offset)


def minute_sql(field):
    """SQL: the minute a timestamp column falls in (exactly as the column compares: SQLite
    keeps 'YYYY-MM-DD HH:MM:SS.ffffff' text, so its first 16 characters)."""
    if on_sqlite():
        return fn.substr(field, 1, 16)
    return fn.date_trunc("minute", field)


@overload
def as_datetime(value: None) -> None: ...
@overload
def as_datetime(value: dt.datetime | str) -> dt.datetime: ...
@overload
def as_datetime(value: Any) -> Any: ...
def as_datetime(value: Any) -> dt.datetime | None:
    """A timestamp as the drivers return it (datetime, or SQLite's text), naive UTC."""
    if value is None or isinstance(value, dt.datetime):
        return value
    text = str(value).replace("T", " ")
    for layout in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return dt.datetime.strptime(text, layout)
        except ValueError:
            continue
    raise ValueError(f"not a timestamp: {value!r}")
