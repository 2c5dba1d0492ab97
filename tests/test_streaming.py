"""The pure core of `ec map` (ectool.streaming) and its driver (ectool.mapper) against an
in-memory backend: order, the window, halting, the joblog and --resume, flat memory."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from ectool.errors import UsageError
from ectool.mapper import Mapper
from ectool.outcome import Outcome
from ectool.streaming import (
    JOBLOG_HEADER,
    Halt,
    JobEntry,
    Release,
    SeqSet,
    StoreFallback,
    decode_line,
    default_window,
    format_joblog,
    parse_halt,
    parse_joblog,
)

# ---------------------------------------------------------------- lines


@pytest.mark.parametrize("raw, value", [
    (b"hello\n", "hello"), (b"hello", "hello"), (b"crlf\r\n", "crlf"), (b"\n", ""), (b"", ""),
    (b"two\n\n", "two\n"), (b"\xff\xfe\n", b"\xff\xfe"), (b"caf\xc3\xa9\n", "café"), (b"a\rb\n", "a\rb"),
    (b"\r\n", ""), (b"lone\r", "lone\r"),
])
def test_decode_line(raw, value):
    assert decode_line(raw) == value


# ---------------------------------------------------------------- release order

@pytest.mark.parametrize("ordered, expected, arrivals, released", [
    (True, [1, 2, 3], [3, 1, 2], [[], [1], [2, 3]]),
    (True, [1, 2, 3], [1, 2, 3], [[1], [2], [3]]),
    (True, [2, 5, 9], [9, 5, 2], [[], [], [2, 5, 9]]),  # gaps: skipped by --resume
    (True, [1, 2], [2, 2, 1, 1], [[], [], [1, 2], []]),  # duplicate replies are ignored
    (True, [1, 2], [7, 1, 2], [[], [1], [2]]),  # unknown sequence numbers too
    (False, [1, 2, 3], [3, 1, 2], [[3], [1], [2]]),
    (False, [1, 2], [2, 2, 1], [[2], [], [1]]),
])
def test_release(ordered, expected, arrivals, released):
    r = Release(ordered)
    for s in expected:
        r.expect(s)
    got = [[seq for seq, _ in r.done(s, f"out{s}")] for s in arrivals]
    assert got == released
    assert r.outstanding == 0 and r.buffered == 0 and r.head() is None


def test_release_counts_and_head():
    r = Release()
    for s in (1, 2, 3):
        r.expect(s)
    assert r.done(2, "b") == [] and (r.outstanding, r.buffered, r.head()) == (3, 1, 1)
    assert r.done(1, "a") == [(1, "a"), (2, "b")] and (r.outstanding, r.head()) == (1, 3)
    with pytest.raises(ValueError):
        r.expect(3)


# ---------------------------------------------------------------- --halt

@pytest.mark.parametrize("text, halt", [
    ("never", Halt()), ("0", Halt()), ("now,fail=1", Halt("now", "fail", 1)), ("2", Halt("now", "fail", 1)),
    ("1", Halt("soon", "fail", 1)), ("soon,fail=3", Halt("soon", "fail", 3)),
    ("now,success=1", Halt("now", "success", 1)), ("soon,done=10", Halt("soon", "done", 10)),
    ("soon,fail=10%", Halt("soon", "fail", 1, 10.0)), (" NOW,FAIL=2 ", Halt("now", "fail", 2)),
])
def test_parse_halt(text, halt):
    assert parse_halt(text) == halt


@pytest.mark.parametrize("text", ["", "now", "later,fail=1", "now,fail=0", "now,fail=x", "soon,fail=150%",
                                  "now,crash=1", "now,fail=1.5"])
def test_parse_halt_rejects(text):
    with pytest.raises(UsageError):
        parse_halt(text)


@pytest.mark.parametrize("halt, failed, succeeded, fired", [
    (Halt(), 100, 0, False),
    (Halt("now", "fail", 1), 0, 50, False), (Halt("now", "fail", 1), 1, 0, True),
    (Halt("soon", "fail", 3), 2, 9, False), (Halt("soon", "fail", 3), 3, 0, True),
    (Halt("now", "success", 2), 5, 1, False), (Halt("now", "success", 2), 0, 2, True),
    (Halt("soon", "done", 4), 2, 2, True),
    (Halt("soon", "fail", 1, 50.0), 1, 0, False),  # fewer than 3 finished: too early to tell
    (Halt("soon", "fail", 1, 50.0), 2, 1, True), (Halt("soon", "fail", 1, 50.0), 1, 2, False),
])
def test_halt_triggers(halt, failed, succeeded, fired):
    assert halt.triggered(failed, succeeded) is fired


# ---------------------------------------------------------------- joblog and --resume

def test_joblog_line_matches_gnu_parallel():
    line = format_joblog(JobEntry(2, ":", 1795599086.006, 0.0031, 0, 2, 1, "echo 2"))
    assert line == "2\t:\t1795599086.006\t     0.003\t0\t2\t1\t0\techo 2\n"  # from parallel 20221122
    assert JOBLOG_HEADER.split("\t") == ["Seq", "Host", "Starttime", "JobRuntime", "Send", "Receive",
                                         "Exitval", "Signal", "Command\n"]
    assert format_joblog(JobEntry(1, "h", 0, 0, 3, 0, 0, "s a\nb")).endswith("\ts a\\nb\n")


def test_parse_joblog_resume_and_resume_failed():
    log = [JOBLOG_HEADER] + [format_joblog(JobEntry(s, ":", 0, 0, 0, 0, int(s == 3), f"s {s}")) for s in (1, 2, 3, 7)]
    log.append("8\t:\t17")  # a torn last line (killed mid-write) is not an entry
    done = parse_joblog(log)
    assert [s for s in range(1, 10) if s in done] == [1, 2, 3, 7]
    ok = parse_joblog(log, failed_too=False)
    assert [s for s in range(1, 10) if s in ok] == [1, 2, 7]


@pytest.mark.parametrize("seqs, ranges", [
    ([], []), ([1, 2, 3], [(1, 3)]), ([5, 1, 2, 4], [(1, 2), (4, 5)]), ([3, 3, 2, 1], [(1, 3)]),
    ([10, 1, 11, 2, 12], [(1, 2), (10, 12)]),
])
def test_seqset(seqs, ranges):
    s = SeqSet(seqs)
    assert s.ranges() == ranges and len(s) == len(set(seqs))
    assert all(x in s for x in seqs) and 0 not in s and 100 not in s


def test_seqset_of_a_million_lines_is_one_range():
    s = SeqSet(range(1, 1_000_001))
    assert s.ranges() == [(1, 1_000_000)] and 1_000_000 in s and 1_000_001 not in s


@pytest.mark.parametrize("concurrency, workers, window",
                         [(None, 0, 256), (0, 3, 256), (1, 2, 256), (64, 2, 256), (64, 3, 384), (100, 0, 256),
                          (200, 0, 400)])
def test_default_window(concurrency, workers, window):
    assert default_window(concurrency, workers) == window


# ---------------------------------------------------------------- the driver, in memory

class FakeBackend:
    """Completes calls in random order, some failing; remembers nothing once released."""

    def __init__(self, fail=lambda v: False, seed: int = 0, lose: float = 0.0, dup: float = 0.0):
        self.inflight: dict[str, object] = {}
        self.fail, self.rng, self.lose, self.dup = fail, random.Random(seed), lose, dup
        self.lost: set[str] = set()
        self.submitted = 0
        self.max_inflight = 0
        self.cancelled: list[str] = []

    def submit(self, values):
        ids = [str(uuid.uuid4()) for _ in values]
        self.inflight.update(zip(ids, values, strict=True))
        self.submitted += len(values)
        self.max_inflight = max(self.max_inflight, len(self.inflight))
        return ids

    def _outcome(self, cid):
        value = self.inflight.pop(cid)
        if self.fail(value):
            return Outcome(cid, "failed", error_type="ValueError", error_message=str(value), attempts=3)
        return Outcome(cid, "done", result=value, attempts=1)

    def poll(self, timeout):
        ready = [c for c in self.inflight if c not in self.lost]
        chosen = self.rng.sample(ready, self.rng.randint(0, len(ready))) if ready else []
        outs = []
        for cid in chosen:
            if self.rng.random() < self.lose:  # a reply that never arrives: the store has it
                self.lost.add(cid)
                continue
            out = self._outcome(cid)
            outs.append(out)
            if self.rng.random() < self.dup:  # a redelivered call replying twice
                outs.append(out)
        return outs

    def check(self, ids):
        found = [c for c in ids if c in self.lost and c in self.inflight]
        self.lost -= set(found)
        return [self._outcome(c) for c in found]

    def cancel(self, ids):
        self.cancelled += ids
        n = len([c for c in ids if c in self.inflight])
        for c in ids:
            self.inflight.pop(c, None)
        return n

    def details(self, ids):
        return {c: ("host1", 100.0, 100.25) for c in ids}


def lines(n: int, state: dict | None = None, window: int | None = None):
    """``n`` lines; asserts the reader never runs more than ``window`` ahead of the writer."""
    for i in range(1, n + 1):
        if state is not None:
            assert i - state["written"] <= window, f"read line {i} with only {state['written']} written"
        yield f"{i}\n".encode()


def run_map(backend, n, window=8, **kw):
    out: list[tuple[int, Outcome]] = []
    state = {"written": 0}
    ahead = window + len(kw["skip"]) if kw.get("skip") else window  # skipped lines take no slot

    def emit(seq, outcome):
        out.append((seq, outcome))
        state["written"] += 1
        return 2

    stats = Mapper(backend, "S", window=window, emit=emit, **kw).run(lines(n, state, ahead))
    return stats, out


@pytest.mark.parametrize("seed", range(5))
def test_map_releases_in_input_order_within_the_window(seed):
    backend = FakeBackend(seed=seed, lose=0.2, dup=0.2)
    stats, out = run_map(backend, 500, window=8)
    assert [s for s, _ in out] == list(range(1, 501))
    assert [o.result for _, o in out] == [str(i) for i in range(1, 501)]
    assert backend.max_inflight <= 8 and (stats.sent, stats.succeeded, stats.failed) == (500, 500, 0)


def test_map_unordered_writes_everything_once():
    stats, out = run_map(FakeBackend(seed=3, dup=0.3), 300, window=16, ordered=False)
    assert sorted(s for s, _ in out) == list(range(1, 301)) and [s for s, _ in out] != list(range(1, 301))


def test_map_counts_failures_and_halt_never_continues():
    stats, out = run_map(FakeBackend(fail=lambda v: v in ("3", "7")), 10)
    assert (stats.failed, stats.succeeded, stats.halted) == (2, 8, None)
    assert [s for s, o in out if not o.ok] == [3, 7]


def test_halt_now_cancels_what_has_not_run_and_writes_nothing_more():
    backend = FakeBackend(fail=lambda v: v == "5", seed=1)
    stats, out = run_map(backend, 1000, window=32, halt=Halt("now", "fail", 1))
    assert stats.halted == "now" and stats.failed == 1
    assert all(o.ok for _, o in out) and 5 not in [s for s, _ in out]
    assert stats.sent < 1000 and backend.inflight == {}  # the rest was cancelled, never sent


def test_halt_soon_finishes_what_is_in_flight():
    backend = FakeBackend(fail=lambda v: v == "5", seed=2)
    stats, out = run_map(backend, 1000, window=32, halt=Halt("soon", "fail", 1))
    assert stats.halted == "soon" and stats.sent < 1000
    assert [s for s, _ in out] == list(range(1, stats.sent + 1))  # everything sent was written, in order
    assert backend.cancelled == []


def test_resume_skips_logged_lines_and_joblog_records_the_rest(tmp_path):
    import io

    log = io.StringIO()
    stats, out = run_map(FakeBackend(), 10, joblog=log, skip=SeqSet([1, 2, 3, 8]))
    assert [s for s, _ in out] == [4, 5, 6, 7, 9, 10] and stats.skipped == 4 and stats.sent == 6
    entries = [line.split("\t") for line in log.getvalue().splitlines()]
    assert [int(e[0]) for e in entries] == [4, 5, 6, 7, 9, 10]
    assert entries[0][1:] == ["host1", "100.000", "     0.250", "2", "2", "0", "0", "S 4"]


def test_map_memory_stays_flat_on_200k_lines():
    """Nothing grows with the input: RSS sampled while 200k lines stream through stays
    within a few MB of where it started (a leak of one outcome per line would be ~100 MB)."""
    import threading

    import psutil

    me = psutil.Process()
    run_map_discarding(5_000)  # warm up imports and allocator pools
    before = me.memory_info().rss
    peak, done = [before], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stats = run_map_discarding(200_000)
    finally:
        done.set()
        sampler.join()
    assert stats.succeeded == 200_000
    assert peak[0] - before < 16 * 2**20, f"RSS grew {(peak[0] - before) / 2**20:.1f} MB"


def run_map_discarding(n):
    state = {"written": 0}

    def emit(seq, outcome):
        state["written"] += 1
        return 0

    return Mapper(FakeBackend(seed=4), "S", window=64, emit=emit).run(lines(n, state, 64))


# ---------------------------------------------------------------- the store fallback

def test_store_fallback_waits_for_overdue_calls_only():
    f = StoreFallback(floor=0.02, factor=4.0, first=0.005, most=0.5, now=100.0)
    assert f.overdue_after == 0.02  # no reply seen yet: the floor
    for _ in range(50):
        f.replied(0.1)
    assert f.overdue_after == pytest.approx(0.4)  # four times the usual reply latency
    assert not f.due(100.004) and f.due(100.005)
    f.checked(100.005, found=False)
    f.checked(100.015, found=False)
    assert f.every == 0.02 and f.next == pytest.approx(100.035)  # nothing found: backing off
    for _ in range(10):
        f.checked(f.next, found=False)
    assert f.every == 0.5  # ... up to `most`
    f.checked(200.0, found=False)
    assert f.next == 200.5
    f.moving(200.1)
    assert f.every == 0.005 and f.next == pytest.approx(200.105)  # outcomes arrive: soon again
    f.checked(200.105, found=True)
    assert f.every == 0.005


def test_map_asks_the_store_only_about_calls_whose_reply_is_late():
    class Prompt(FakeBackend):
        """Replies to every call 20 ms after it was sent, except the calls of every 50th
        line (their replies are lost; the store has their outcomes)."""

        checked: list[str] = []
        sent: dict[str, float] = {}

        def submit(self, values):
            ids = super().submit(values)
            self.sent.update((cid, time.monotonic()) for cid in ids)
            return ids

        def poll(self, timeout):
            time.sleep(min(timeout, 0.002))
            outs = []
            for cid in list(self.inflight):
                if cid in self.lost or time.monotonic() - self.sent[cid] < 0.02:
                    continue
                if int(self.inflight[cid]) % 50 == 0:
                    self.lost.add(cid)
                else:
                    outs.append(self._outcome(cid))
            return outs

        def check(self, ids):
            self.checked += ids
            return super().check(ids)

    backend = Prompt()
    stats, out = run_map(backend, 1000, window=64)
    assert [s for s, _ in out] == list(range(1, 1001)) and stats.succeeded == 1000
    lost_lines = {str(i) for i in range(50, 1001, 50)}
    assert len(backend.checked) < 10 * len(lost_lines)  # not every call in flight, again and again (~2000)
