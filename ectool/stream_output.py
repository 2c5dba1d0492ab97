"""Where ``ec attach`` resumes a named stream's output (pure).

The producer records, with the last line it wrote, the identity (device, inode) and size
of its output file then. Lines written after that record and before it died are in the
file already: when ``ec attach`` writes to that same file (``>> out``), the bytes the file
grew by since the record are the start of what attach would write again, so attach skips
exactly that many bytes of its output (a line the producer wrote in part is completed, not
repeated).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    dev: int
    ino: int
    size: int


def identity(dev: int, ino: int, size: int) -> Identity:
    return Identity(dev, ino, size)


def already_written(recorded: Identity | None, current: Identity | None) -> tuple[int, str | None]:
    """(bytes of the output after the recorded position that the current output already
    holds, a note for stderr or None). Only the same regular file counts; a file that
    shrank since (truncated, ``>`` instead of ``>>``) holds none of them."""
    if recorded is None or current is None:
        return 0, None
    if (recorded.dev, recorded.ino) != (current.dev, current.ino):
        return 0, None
    grown = current.size - recorded.size
    if grown < 0:
        return 0, (f"the output file is {-grown} byte(s) shorter than when the stream last wrote to it "
                   "(opened with > rather than >>?): writing from the recorded position")
    return grown, None


class Trim:
    """Drops the first ``skip`` bytes of what passes through :meth:`__call__`."""

    def __init__(self, skip: int) -> None:
        self.skip = skip

    def __call__(self, data: bytes) -> bytes:
        if self.skip <= 0:
            return data
        cut = min(self.skip, len(data))
        self.skip -= cut
        return data[cut:]
