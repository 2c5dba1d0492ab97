"""The pure core of ``ec map``: line decoding, the in-order release buffer, the halt
policy, and GNU parallel's joblog (writing it, and reading it back for ``--resume``).

Nothing here touches stdin, the store or the transport; :mod:`ectool.mapper` drives it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


def decode_line(raw: bytes) -> str | bytes:
    """One input line as a call argument: its trailing ``\\n`` (and ``\\r``) removed, as
    text when it is UTF-8 and as bytes otherwise (bytes round-trip exactly)."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class Release:
    """Hands outcomes back in input order (or at once with ``ordered=False``).

    Sequence numbers are added with :meth:`expect` in increasing order (gaps allowed: lines
    skipped by ``--resume`` never enter); :meth:`done` files an outcome and returns every
    (seq, outcome) that may now be written. An outcome for an unknown or already released
    sequence number (a duplicate reply after a redelivery) is ignored.
    """

    def __init__(self, ordered: bool = True) -> None:
        self.ordered = ordered
        self._order: deque[int] = deque()  # ordered mode: expected, not yet released
        self._waiting: set[int] = set()  # expected, no outcome yet
        self._ready: dict[int, Any] = {}  # outcome received, waiting for an earlier one
        self._last = 0

    def expect(self, seq: int) -> None:
        if seq <= self._last:
            raise ValueError(f"sequence numbers must increase: {seq} after {self._last}")
        self._last = seq
        self._waiting.add(seq)
        if self.ordered:
            self._order.append(seq)

    @property
    def outstanding(self) -> int:
        """Sequence numbers expected and not yet released (in flight plus buffered)."""
        return len(self._waiting) + len(self._ready)

    @property
    def buffered(self) -> int:
        """Outcomes received and waiting for an earlier one."""
        return len(self._ready)

    def head(self) -> int | None:
        """The sequence number the rest waits for (ordered), or the oldest in flight."""
        if self._order:
            return self._order[0]
        return min(self._waiting) if self._waiting else None

    def done(self, seq: int, outcome: Any) -> list[tuple[int, Any]]:
        if seq not in self._waiting:
            return []
        self._waiting.discard(seq)
        if not self.ordered:
            return [(seq, outcome)]
        self._ready[seq] = outcome
        out = []
        while self._order and self._order[0] in self._ready:
            s = self._order.popleft()
            out.append((s, self._ready.pop(s)))
        return out


# ---------------------------------------------------------------- --halt

@dataclass(frozen=True)
class Halt:
    """GNU parallel's ``--halt WHEN,WHAT=N``: stop ``now`` (cancel what has not started,
    print nothing more) or ``soon`` (send nothing more, finish and print what is in
    flight) once ``fail``/``success``/``done`` reaches ``N`` calls or ``N%`` of finished ones."""

    when: str = "never"  # never | soon | now
    what: str = "fail"  # fail | success | done
    count: int = 1
    percent: float | None = None

    def triggered(self, failed: int, succeeded: int) -> bool:
        if self.when == "never":
            return False
        finished = failed + succeeded
        n = {"fail": failed, "success": succeeded, "done": finished}[self.what]
        if self.percent is not None:
            # like parallel, a percentage needs at least 3 finished calls to mean anything
            return finished >= 3 and n * 100 >= self.percent * finished
        return n >= self.count


_HALT_RE = re.compile(r"^(now|soon),(fail|success|done)=(\d+(?:\.\d+)?)(%?)$")


def parse_halt(text: str) -> Halt:
    """``never``, ``now,fail=1``, ``soon,fail=3``, ``now,success=1``, ``soon,fail=10%``,
    ``done=N``; also parallel's old numbers ``0`` (never), ``1`` (soon,fail=1), ``2``
    (now,fail=1). Anything else is a usage error."""
    text = text.strip().lower()
    legacy = {"0": "never", "1": "soon,fail=1", "2": "now,fail=1"}
    text = legacy.get(text, text)
    if text == "never":
        return Halt()
    m = _HALT_RE.match(text)
    if not m:
        raise UsageError(f"bad --halt {text!r}: use never, now,fail=N, soon,fail=N, "
                         "now,success=N, soon,done=N or a percentage such as soon,fail=10%")
    when, what, number, pct = m.groups()
    if pct:
        value = float(number)
        if not 0 < value <= 100:
            raise UsageError(f"bad --halt {text!r}: a percentage is between 0 and 100")
        return Halt(when, what, 1, value)
    if "." in number or int(number) < 1:
        raise UsageError(f"bad --halt {text!r}: the count is a whole number >= 1")
    return Halt(when, what, int(number))


# ---------------------------------------------------------------- --joblog

JOBLOG_HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


@dataclass(frozen=True)
class JobEntry:
    seq: int
    host: str
    start: float  # epoch seconds
    runtime: float  # seconds
    sent: int  # bytes of input
    received: int  # bytes of output
    exitval: int  # 0 done, 1 otherwise
    command: str


def format_joblog(e: JobEntry) -> str:
    """One joblog line exactly as GNU parallel writes it (``%.3f`` start, ``%10.3f`` runtime)."""
    command = e.command.replace("\n", "\\n").replace("\r", "\\r")
    return (f"{e.seq}\t{e.host or ':'}\t{e.start:.3f}\t{e.runtime:10.3f}\t{e.sent}\t{e.received}\t"
            f"{e.exitval}\t0\t{command}\n")


def job_command(socket: str, value: str | bytes) -> str:
    """The joblog's Command column: the socket and the line (bytes shown escaped)."""
    line = value if isinstance(value, str) else value.decode("utf-8", "backslashreplace")
    return f"{socket} {line}"


class SeqSet:
    """A set of sequence numbers stored as sorted, merged ranges: a joblog of ten million
    mostly consecutive lines costs a handful of ranges, not ten million integers."""

    def __init__(self, seqs: Iterable[int] = ()) -> None:
        self._runs: list[list[int]] = []  # [first, last] inclusive, unsorted until _seal
        self._sealed = True
        self._starts: list[int] = []
        for s in seqs:
            self.add(s)

    def add(self, seq: int) -> None:
        runs = self._runs
        if runs and runs[-1][0] <= seq <= runs[-1][1] + 1:
            runs[-1][1] = max(runs[-1][1], seq)
        else:
            runs.append([seq, seq])
        self._sealed = False

    def _seal(self) -> None:
        if self._sealed:
            return
        merged: list[list[int]] = []
        for first, last in sorted(self._runs):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._runs, self._starts, self._sealed = merged, [r[0] for r in merged], True

    def __contains__(self, seq: int) -> bool:
        self._seal()
        i = bisect_right(self._starts, seq) - 1
        return i >= 0 and self._runs[i][1] >= seq

    def __len__(self) -> int:
        self._seal()
        return sum(last - first + 1 for first, last in self._runs)

    def ranges(self) -> list[tuple[int, int]]:
        self._seal()
        return [(a, b) for a, b in self._runs]


def parse_joblog(lines: Iterable[str], *, failed_too: bool = True) -> SeqSet:
    """The sequence numbers a joblog records, to skip on ``--resume``. With
    ``failed_too=False`` (``--resume-failed``) only calls that succeeded (Exitval 0) count.
    The header, blank lines and lines that are not entries (a torn last line) are ignored."""
    done = SeqSet()
    for line in lines:
        fields = line.split("\t", 8)
        if len(fields) < 7 or not fields[0].isdigit():
            continue
        if failed_too or fields[6].strip() == "0":
            done.add(int(fields[0]))
    return done


# ---------------------------------------------------------------- the window

#: the smallest default window: for short calls the round trip (submit, confirm, run,
#: record, reply), not the workers, bounds a map, and it takes a few hundred lines in
#: flight to keep that pipeline full (seq 30000 | ec map noop, 2 workers: 1,029 -> 1,800
#: lines/s on PostgreSQL + RabbitMQ, 3,178 -> 4,845 embedded, going from 32 to 256)
MIN_WINDOW = 256


def default_window(socket_concurrency: int | None, live_workers: int) -> int:
    """``-j`` when not given: twice what the socket's live workers run at once (its
    concurrency times their number), so the next calls already wait in the queue when a
    worker finishes, and at least :data:`MIN_WINDOW`."""
    return max(MIN_WINDOW, 2 * (socket_concurrency or 0) * max(1, live_workers))


def status_exitval(status: str) -> int:
    """Exitval for the joblog: 0 for a call that ended ``done``, 1 otherwise."""
    return 0 if status == "done" else 1


class StoreFallback:
    """When ``ec map`` asks the store for outcomes whose replies did not come.

    Replies are best-effort (the embedded transport's datagrams drop when the receiver
    lags), so the store is asked too, but only about *overdue* calls: those that have
    waited ``factor`` times the usual reply latency (a moving average of the replies seen,
    at least ``floor`` seconds). While replies flow that is nobody, and the store is left
    alone; asking about every call in flight every few milliseconds cost PostgreSQL more
    CPU than the calls themselves. The store is asked at most every ``first`` seconds after
    it had something, doubling up to ``most`` while it has nothing.
    """

    def __init__(self, *, floor: float = 0.02, factor: float = 4.0, first: float = 0.005,
                 most: float = 0.5, now: float = 0.0) -> None:
        self.floor, self.factor, self.first, self.most = floor, factor, first, most
        self.latency: float | None = None
        self.every = first
        self.next = now + first

    def replied(self, waited: float) -> None:
        """A reply came for a call that waited ``waited`` seconds."""
        self.latency = waited if self.latency is None else 0.9 * self.latency + 0.1 * waited

    @property
    def overdue_after(self) -> float:
        """Seconds after which a call without a reply is looked up in the store."""
        return max(self.floor, self.factor * (self.latency or 0.0))

    def due(self, now: float) -> bool:
        return now >= self.next

    def checked(self, now: float, found: bool) -> None:
        """The store was asked; ``found``: it had outcomes."""
        self.every = self.first if found else min(self.most, self.every * 2)
        self.next = now + self.every

    def moving(self, now: float) -> None:
        """Outcomes arrived: after a quiet spell, look at the store again soon."""
        if self.every > self.first:
            self.every = self.first
            self.next = min(self.next, now + self.first)
