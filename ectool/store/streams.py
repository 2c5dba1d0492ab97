"""The store's named streams (schema v10): ``ec map --name NAME`` records its socket, every
input line it read with the call id chosen for it (before the call is submitted), how far
submission got, and how far its output got, so ``ec attach NAME`` can finish the stream
after the producer died.

A line's row is committed before its call is submitted, so a call of the stream is never
unknown to it; ``sent`` is the last line whose submit returned (durable), and ``out_seq``
the last line written (with the output file's identity and size then, to reconcile).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peewee import (
    BigIntegerField,
    BlobField,
    BooleanField,
    CharField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from .models import Base, db, now, one_of

#: running: a producer (ec map or ec attach) writes it, or died doing so; interrupted: one
#: stopped on Ctrl-C; finished: everything was written (or the stream was halted)
STREAM_STATE = ("running", "interrupted", "finished")


class Stream(Base):
    name = CharField(unique=True)
    socket = CharField()
    state = CharField(default="running", constraints=[one_of("state", STREAM_STATE)])
    options = TextField(default="{}")  # JSON: how output is written ({"json": true})
    host = CharField(null=True)  # the producer writing it now
    pid = IntegerField(null=True)
    read = IntegerField(default=0)  # input lines stored
    eof = BooleanField(default=False)  # the input ended (every line is stored)
    sent = IntegerField(default=0)  # the last line whose call is durably submitted
    out_seq = IntegerField(default=0)  # the last line written
    out_dev = BigIntegerField(null=True)  # the output file's identity then (a regular file)
    out_ino = BigIntegerField(null=True)
    out_size = BigIntegerField(null=True)  # its size then


class StreamLine(Model):
    stream = ForeignKeyField(Stream, backref="lines", on_delete="CASCADE")
    seq = IntegerField()
    line = BlobField()  # the raw input line, newline included
    call = CharField(max_length=36)

    class Meta:
        database = db
        legacy_table_names = False
        indexes = ((("stream", "seq"), True),)


STREAM_MODELS = [Stream, StreamLine]


def create(name: str, socket: str, options: str, host: str, pid: int) -> Stream:
    """A new stream row; a name already used by an unfinished stream is refused by the caller."""
    return Stream.create(name=name, socket=socket, options=options, host=host, pid=pid)


def get(name: str) -> Stream | None:
    return Stream.get_or_none(Stream.name == name)


def add_lines(stream_id: int, first: int, lines: Sequence[bytes], calls: Sequence[str], eof: bool) -> None:
    """Store lines ``first``, ``first + 1``, ... with their call ids, in one transaction."""
    with db.atomic():
        if lines:
            rows = [(stream_id, first + i, line, cid) for i, (line, cid) in enumerate(zip(lines, calls, strict=True))]
            for i in range(0, len(rows), 500):
                StreamLine.insert_many(rows[i:i + 500], fields=[StreamLine.stream, StreamLine.seq, StreamLine.line,
                                                                StreamLine.call]).execute()
        fields: dict[Any, Any] = {Stream.read: first + len(lines) - 1, Stream.updated: now()}
        if eof:
            fields[Stream.eof] = True
        Stream.update(fields).where(Stream.id == stream_id).execute()


def update(stream_id: int, **fields: Any) -> None:
    Stream.update(updated=now(), **fields).where(Stream.id == stream_id).execute()


def lines(stream_id: int, after: int, limit: int) -> list[tuple[int, bytes, str]]:
    """(seq, line, call id) of the lines after ``after``, at most ``limit``, in order."""
    query = (StreamLine.select(StreamLine.seq, StreamLine.line, StreamLine.call)
             .where((StreamLine.stream == stream_id) & (StreamLine.seq > after))
             .order_by(StreamLine.seq).limit(limit).tuples())
    return [(seq, bytes(line), cid) for seq, line, cid in query]


def calls_of(stream_id: int) -> list[str]:
    """Every call id of the stream, in input order."""
    return [cid for (cid,) in StreamLine.select(StreamLine.call).where(StreamLine.stream == stream_id)
            .order_by(StreamLine.seq).tuples()]


def select() -> list[Stream]:
    return list(Stream.select().order_by(Stream.created))


def delete(name: str) -> bool:
    """Delete a stream and its lines (the calls stay); False if there is none."""
    with db.atomic():
        row = get(name)
        if row is None:
            return False
        StreamLine.delete().where(StreamLine.stream == row.id).execute()
        row.delete_instance()
    return True
