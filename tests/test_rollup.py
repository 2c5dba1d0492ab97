"""Per-minute stats rollups (ec stats history): the pure math, rollups and windows on both
stores (idempotent, concurrent, late outcomes, pruning, Call rows deleted), and counts that
match `ec ls calls` with real calls across a recompute."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys

import pytest

from ectool import metrics
from ectool.metrics import MINUTE, queries, rollups
from ectool.metrics.sql import as_datetime

pytestmark = pytest.mark.timeout(120)

T0 = dt.datetime(2030, 1, 1, 12, 0)
MS = dt.timedelta(milliseconds=1)
S = dt.timedelta(seconds=1)


# -- pure --------------------------------------------------------------------------------


@pytest.mark.parametrize("when, floor, ceil", [
    (T0, T0, T0),
    (T0 + 1 * MS, T0, T0 + MINUTE),
    (T0 + 59_999 * MS, T0, T0 + MINUTE),
    (T0 - dt.timedelta(microseconds=1), T0 - MINUTE, T0),
])
def test_floor_and_ceil_minute(when, floor, ceil):
    assert (metrics.floor_minute(when), metrics.ceil_minute(when)) == (floor, ceil)


@pytest.mark.parametrize("since, until, first, end, expected", [
    # never rolled up: everything from the calls
    (T0, T0 + 10 * MINUTE, None, None, None),
    # aligned window inside the rollups
    (T0, T0 + 10 * MINUTE, T0 - 60 * MINUTE, T0 + 60 * MINUTE, (T0, T0 + 10 * MINUTE)),
    # a partial first and last minute stay with the calls
    (T0 + 30 * S, T0 + 10 * MINUTE + 5 * S, T0 - 60 * MINUTE, T0 + 60 * MINUTE, (T0 + MINUTE, T0 + 10 * MINUTE)),
    # rollups end before the window does (the last minutes are not rolled up yet)
    (T0, T0 + 10 * MINUTE, T0 - 60 * MINUTE, T0 + 3 * MINUTE, (T0, T0 + 3 * MINUTE)),
    # rollups begin inside the window (older ones pruned, or never made)
    (T0, T0 + 10 * MINUTE, T0 + 4 * MINUTE, T0 + 60 * MINUTE, (T0 + 4 * MINUTE, T0 + 10 * MINUTE)),
    # no whole rolled-up minute in the window
    (T0 + 30 * S, T0 + 90 * S, T0 - 60 * MINUTE, T0 + 60 * MINUTE, None),
    (T0, T0 + 10 * MINUTE, T0 + 20 * MINUTE, T0 + 60 * MINUTE, None),
    (T0, T0 + 10 * MINUTE, T0 - 60 * MINUTE, T0, None),
])
def test_split(since, until, first, end, expected):
    assert metrics.split(since, until, first, end) == expected


def test_buckets_hold_values_within_their_resolution():
    rng = random.Random(7)
    for ms in [0.001, 0.5, 1, 3.7, 100, 999.9, 12_345.6, 3_600_000] + [rng.uniform(0.01, 1e6) for _ in range(2000)]:
        middle = metrics.bucket_value(metrics.bucket(ms))
        assert abs(middle - ms) / ms < 0.022, ms
    assert metrics.bucket(0) == metrics.bucket(-5) == metrics.bucket(metrics.MIN_MS)
    assert metrics.bucket(1.0) == 0 and metrics.bucket(2.0) == metrics.BUCKETS_PER_OCTAVE


@pytest.mark.parametrize("values", [
    [5.0], [1, 2, 3, 4], [100, 200, 300, 400, 500], [0, 0, 0, 1000],
    [random.Random(1).lognormvariate(3, 1.2) for _ in range(5000)],
    [random.Random(2).uniform(10, 20) for _ in range(333)],
])
def test_histogram_percentiles_track_exact_ones(values):
    hist = metrics.histogram(values)
    assert sum(hist.values()) == len(values)
    ordered = sorted(values)
    for q in (0, 50, 90, 95, 99, 100):
        exact = metrics.percentile(ordered, q)
        approx = metrics.hist_percentile(hist, q)
        assert approx == pytest.approx(exact, rel=0.025, abs=0.002), q


def test_histogram_merge_encode_and_empty():
    a, b = metrics.histogram([1, 2, 2]), metrics.histogram([2, 400])
    merged = metrics.merge(dict(a), b)
    assert merged == metrics.histogram([1, 2, 2, 2, 400])
    assert metrics.decode_histogram(metrics.encode_histogram(merged)) == merged
    assert metrics.decode_histogram(None) == {} and metrics.decode_histogram("{}") == {}
    assert metrics.hist_percentile({}, 50) is None
    with pytest.raises(ValueError):
        metrics.hist_percentile(merged, 120)


def test_summarize_counts_and_minute_percentiles():
    row = metrics.summarize(T0, "s", {"submitted": 4, "done": 3, "failed": 1, "retried": 1},
                            [400, 100, 300, 200], [10, 10, 30, 20])
    assert {k: row[k] for k in metrics.COUNTS} == {
        "submitted": 4, "done": 3, "failed": 1, "dead": 0, "cancelled": 0, "retried": 1, "timed": 4}
    assert (row["run_p50_ms"], row["run_p95_ms"], row["run_p99_ms"], row["wait_p50_ms"]) == (250, 385, 397, 15)
    assert row["run_ms_sum"] == 1000 and metrics.total(row) == 8
    assert metrics.decode_histogram(row["run_hist"]) == metrics.histogram([100, 200, 300, 400])


# -- the store -----------------------------------------------------------------------------


def call(i, socket="s1", status="done", at=T0, run_ms=100, wait_ms=50, attempts=1, **extra):
    """A Call row submitted at ``at``, started ``wait_ms`` later, finished ``run_ms`` after."""
    row = dict(id=f"{socket}-{i}", socket=socket, root=f"{socket}-{i}", status=status, attempts=attempts,
               submitted=at, started=None, finished=None)  # every key: insert_many takes the first row's
    if status in ("done", "failed"):
        row.update(started=at + wait_ms * MS, finished=at + (wait_ms + run_ms) * MS)
    elif status in ("dead", "cancelled"):
        row.update(finished=at + wait_ms * MS)
    elif status == "running":
        row.update(started=at + wait_ms * MS)
    row.update(extra)
    return row


@pytest.fixture
def store(db_url):
    from ectool.store import open_store

    database = open_store(db_url)
    yield database
    database.close()


def history(base: dt.datetime) -> list[dict]:
    """Calls over ten minutes from ``base``: two sockets, every status, retries, a call
    submitted in one minute and finished in the next, one just before a minute ends."""
    rng = random.Random(3)
    rows = []
    for i in range(300):
        at = base + rng.uniform(0, 600_000) * MS
        status = rng.choice(["done"] * 6 + ["failed", "dead", "cancelled", "queued", "running"])
        rows.append(call(i, rng.choice(["s1", "s2"]), status, at, run_ms=rng.uniform(1, 900),
                         wait_ms=rng.uniform(0, 300), attempts=rng.choice([1, 1, 1, 2, 3])))
    rows.append(call("edge", "s1", "done", base + 59_999 * MS, run_ms=0.5, wait_ms=0.2))
    rows.append(call("span", "s2", "done", base + 2 * MINUTE - 10 * MS, run_ms=30_000))
    return rows


def stored_rows() -> list[dict]:
    from ectool.store.models import MinuteStat

    out = []
    for r in MinuteStat.select().order_by(MinuteStat.minute, MinuteStat.socket).dicts():
        r.pop("id")
        r["minute"] = as_datetime(r["minute"])
        for k in ("run_ms_sum", "run_p50_ms", "run_p95_ms", "run_p99_ms", "wait_p50_ms"):
            r[k] = None if r[k] is None else round(r[k], 1)
        out.append(r)
    return out


def from_calls(since, until):
    """socket_stats as if nothing were rolled up."""
    from unittest import mock

    with mock.patch.object(queries, "rolled_up", return_value=None):
        return {r["socket"]: r for r in metrics.socket_stats(since, until)}


COUNT_KEYS = ("in", "out", "done", "failed", "dead", "cancelled", "retried", "failure_rate", "queued", "running")


def test_rollup_is_idempotent_and_matches_the_calls(store):
    from ectool.store.models import Call, MinuteStat

    base = metrics.floor_minute(metrics.now()) - 30 * MINUTE
    Call.insert_many(history(base)).execute()
    until = base + 12 * MINUTE
    assert metrics.rollup(until) >= 10
    assert metrics.rolled_up() == (base, until)
    first = stored_rows()
    assert metrics.rollup(until) == 0 and metrics.rollup() >= 0
    rollups._write(metrics.compute(base, until), until - MINUTE)  # a second writer of the same minutes
    assert stored_rows()[: len(first)] == first
    # every minute's counts agree with the Call rows, per socket and in the totals row
    for r in (r for r in first if r["socket"]):
        m = r["minute"]
        calls = Call.select().where(Call.socket == r["socket"])
        assert r["submitted"] == calls.where((Call.submitted >= m) & (Call.submitted < m + MINUTE)).count()
        for status in ("done", "failed", "dead", "cancelled"):
            assert r[status] == calls.where((Call.finished >= m) & (Call.finished < m + MINUTE)
                                            & (Call.status == status)).count(), (r, status)
    totals = {r["minute"]: r for r in first if r["socket"] == ""}
    for m, t in totals.items():
        parts = [r for r in first if r["minute"] == m and r["socket"]]
        assert all(t[k] == sum(p[k] for p in parts) for k in metrics.COUNTS)
    edge = MinuteStat.get((MinuteStat.minute == base) & (MinuteStat.socket == "s1"))
    assert edge.done >= 1  # finished at :59.999 stays in its minute
    # windows read from rollups + calls equal windows read from the calls alone
    for since, upto in [(base, until), (base + 17 * S, base + 9 * MINUTE + 3 * S), (base - MINUTE, metrics.now())]:
        mixed = {r["socket"]: r for r in metrics.socket_stats(since, upto)}
        plain = from_calls(since, upto)
        assert {s: {k: r[k] for k in COUNT_KEYS} for s, r in mixed.items()} == \
            {s: {k: r[k] for k in COUNT_KEYS} for s, r in plain.items()}
        for s in plain:  # few calls and all rows there: the percentiles are the exact ones
            assert mixed[s]["latency_exact"] is True
            assert mixed[s]["p95_ms"] == plain[s]["p95_ms"]


def test_history_survives_deleted_calls(store):
    from ectool.store.models import Call

    base = metrics.floor_minute(metrics.now()) - 30 * MINUTE
    Call.insert_many(history(base)).execute()
    since, until = base - MINUTE, base + 20 * MINUTE
    before = from_calls(since, until)
    assert metrics.rollup(base + 15 * MINUTE) >= 10
    rows = stored_rows()
    # a rollup over minutes whose calls are partly gone never shrinks them
    Call.delete().where(Call.submitted < base + 5 * MINUTE).execute()
    rollups._write(metrics.compute(base, base + 15 * MINUTE))
    assert rollups._repair(base, base + 15 * MINUTE) == 0
    assert stored_rows() == rows
    Call.delete().where(Call.submitted < base + 15 * MINUTE).execute()
    Call.insert_many([call("late", "s1", "done", base + 16 * MINUTE)]).execute()
    after = {r["socket"]: r for r in metrics.socket_stats(since, until, minutes=True)}
    for s, r in before.items():
        assert {k: after[s][k] for k in ("in", "done", "failed", "dead", "cancelled", "retried")} == \
            {k: r[k] + (1 if s == "s1" and k in ("in", "done") else 0)
             for k in ("in", "done", "failed", "dead", "cancelled", "retried")}
        assert after[s]["latency_exact"] is False  # the Call rows are gone: from the histograms
        assert after[s]["p50_ms"] == pytest.approx(r["p50_ms"], rel=0.05)
        assert after[s]["p99_ms"] == pytest.approx(r["p99_ms"], rel=0.05)
        assert sum(m["in"] for m in after[s]["minutes"]) == after[s]["in"]
    assert after["s1"]["minutes"][-1]["minute"] == (base + 16 * MINUTE).isoformat(timespec="minutes") + "Z"


def test_late_outcomes_are_repaired(store):
    from ectool.store.models import Call

    base = metrics.floor_minute(metrics.now()) - 30 * MINUTE
    Call.insert_many([call(i, at=base + i * S) for i in range(5)]).execute()
    metrics.rollup(base + 5 * MINUTE)
    # committed after their minute was rolled up (a slow store, a skewed clock)
    Call.insert_many([call("late1", at=base + 30 * S), call("late2", "s3", at=base + 3 * MINUTE)]).execute()
    assert metrics.rollup(base + 6 * MINUTE) == 2  # the two minutes that gained calls, redone
    got = {(r["minute"], r["socket"]): r for r in stored_rows()}
    assert got[(base, "s1")]["submitted"] == 6 and got[(base, "")]["done"] == 6
    assert got[(base + 3 * MINUTE, "s3")]["done"] == 1
    counts = {r["socket"]: r["in"] for r in metrics.socket_stats(base, base + 6 * MINUTE)}
    assert counts == {"s1": 6, "s3": 1}


def test_rollup_starts_at_the_first_call_skips_idle_minutes_and_keeps_to_its_budget(store):
    from ectool.store.models import Call, MinuteStat

    assert metrics.rollup() == 0 and metrics.rolled_up() is None  # nothing yet: no mark
    base = metrics.floor_minute(metrics.now()) - 3 * 24 * 60 * MINUTE
    Call.insert_many([call(i, at=base + i * 6 * 60 * MINUTE) for i in range(10)]).execute()
    assert metrics.rollup(since=base + 7 * 6 * 60 * MINUTE, budget=0) == metrics.CHUNK  # one chunk
    assert metrics.rolled_up()[0] == base + 7 * 6 * 60 * MINUTE
    assert metrics.rollup(budget=0) == metrics.CHUNK
    metrics.rollup()
    first, end = metrics.rolled_up()
    assert end == metrics.floor_minute(metrics.now() - dt.timedelta(seconds=metrics.SETTLE))
    assert MinuteStat.select().count() < 20  # idle minutes are skipped, not written
    assert sum(r.submitted for r in MinuteStat.select().where(MinuteStat.socket == "s1")) == 3
    # the calls before the first rolled-up minute are still counted, from their rows
    assert {r["socket"]: r["in"] for r in metrics.socket_stats(base - MINUTE)} == {"s1": 10}


def test_prune_keeps_the_retention(store):
    from ectool.store.models import Call, MinuteStat

    now = metrics.floor_minute(metrics.now())
    Call.insert_many([call(i, at=now - i * 60 * MINUTE) for i in range(1, 6)]).execute()
    metrics.rollup()
    assert MinuteStat.select().where(MinuteStat.socket == "s1").count() == 5
    cutoff = metrics.floor_minute(metrics.now() - dt.timedelta(minutes=150))
    old = MinuteStat.select().where(MinuteStat.minute < cutoff).count()
    assert old >= 3 * 2  # the socket rows and totals of hours 3, 4 and 5 (and marks)
    assert metrics.prune("150m") == old
    assert sorted(r.submitted for r in MinuteStat.select().where(MinuteStat.socket == "s1")) == [1, 1]
    assert metrics.prune(dt.timedelta(days=1)) == 0
    kept = stored_rows()
    assert metrics.maintain("30d") == 0 and stored_rows() == kept
    # the pruned hours count from their Call rows while those last
    assert {r["socket"]: r["in"] for r in metrics.socket_stats(now - 6 * 60 * MINUTE)} == {"s1": 5}


def _rollup_in(db_url: str, until: dt.datetime) -> subprocess.Popen:
    code = ("import sys, datetime as dt\n"
            "from ectool import metrics\nfrom ectool.store import open_store\n"
            "open_store(sys.argv[1])\n"
            "print(metrics.rollup(dt.datetime.fromisoformat(sys.argv[2])))\n")
    return subprocess.Popen([sys.executable, "-c", code, db_url, until.isoformat()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_rollups_write_the_same_rows(store, db_url):
    from ectool.store.models import Call, MinuteStat

    base = metrics.floor_minute(metrics.now()) - 90 * MINUTE
    rows = []
    for k in range(8):
        rows += [dict(r, id=f"{r['id']}-{k}", root=f"{r['root']}-{k}") for r in history(base + k * 10 * MINUTE)]
    Call.insert_many(rows).execute()
    until = base + 80 * MINUTE
    procs = [_rollup_in(db_url, until) for _ in range(3)]
    outs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    got = stored_rows()
    assert len({(r["minute"], r["socket"]) for r in got}) == len(got)
    MinuteStat.delete().execute()  # one clean run writes the same
    assert metrics.rollup(until) > 0
    assert stored_rows() == got


# -- real calls: counts match `ec ls calls` across a recompute ------------------------------


def test_stats_match_ls_calls_across_rollups_with_real_calls(tmp_path):
    from ectool.store import open_store
    from ectool.store.models import Call, db
    from helpers import ec, sample_network, wait_for, workers

    broker = f"sqlite:///{tmp_path / 'queue.db'}"
    with sample_network(tmp_path, broker, sockets={"echo": ("echo", {}), "boom": ("boom", {"retries": 1,
                                                                                         "backoff": 0.05})}) as (env, proc):
        def run_batch(n_ok: int, n_bad: int) -> None:
            ok = ec("run", "echo", "--lines", env=env, input="".join(f"x{i}\n" for i in range(n_ok)))
            bad = ec("run", "boom", "--lines", env=env, input="".join(f"y{i}\n" for i in range(n_bad)))
            assert ok.returncode == 0, ok.stderr
            assert bad.returncode == (1 if n_bad else 0), bad.stderr

        def shift(minutes: float) -> None:
            """Move every call so far back in time, as if it ran that long ago."""
            open_store(env["EC_DB"])
            delta = dt.timedelta(minutes=minutes)
            for row in Call.select():
                Call.update(submitted=row.submitted - delta,
                            started=row.started - delta if row.started else None,
                            finished=row.finished - delta if row.finished else None).where(
                    Call.id == row.id).execute()
            db.close()

        def check(since: str = "1h") -> dict:
            out = ec("stats", "--since", since, "--json", "--per-minute", env=env)
            assert out.returncode == 0, out.stderr
            got = {s["socket"]: s for s in json.loads(out.stdout)["sockets"]}
            listed = json.loads(ec("ls", "calls", "--since", since, "--limit", "100000", "--json", env=env).stdout)
            for name in ("echo", "boom"):
                mine = [c for c in listed if c["socket"] == name]
                assert got[name]["in"] == len(mine), name
                for status in ("done", "failed"):
                    assert got[name][status] == sum(c["status"] == status for c in mine), (name, status)
                assert sum(m["in"] for m in got[name]["minutes"]) == got[name]["in"]
            return got

        def settled() -> bool:
            open_store(env["EC_DB"])
            try:
                return Call.select().where(Call.status.in_(("queued", "running", "retrying"))).count() == 0
            finally:
                db.close()

        with workers(env, proc, 2):
            run_batch(20, 3)
            wait_for(settled, what="calls settled")
            shift(20)  # these ran twenty minutes ago
            first = check()
            assert first["echo"]["done"] == 20 and first["boom"]["failed"] == 3
            assert first["boom"]["retried"] == 3
            open_store(env["EC_DB"])
            assert metrics.rolled_up() is not None  # ec stats rolled them up
            db.close()
            run_batch(15, 2)  # a restart-like recompute: more calls, then ec stats again
        second = check()
        assert (second["echo"]["done"], second["boom"]["failed"]) == (35, 5)
        with workers(env, proc, 1):  # restarted workers, a third batch, still exact
            run_batch(5, 0)
        third = check()
        assert third["echo"]["done"] == 40 and third["echo"]["in"] == 40


def test_the_agent_rolls_up_and_prunes(tmp_path):
    """ec-agentd rolls the store's minutes up as it starts (then once a minute) and prunes
    them to stats_retention."""
    from ectool.store import open_store
    from ectool.store.models import Call, MinuteStat, db
    from helpers import agent, env_for, wait_for

    url = f"sqlite:///{tmp_path / 'ec.db'}"
    open_store(url)
    base = metrics.floor_minute(metrics.now())
    Call.insert_many([call(i, at=base - dt.timedelta(minutes=m)) for i, m in enumerate((5, 6, 90))]).execute()
    db.close()
    env = env_for(url, f"sqlite:///{tmp_path / 'queue.db'}", EC_STATS_RETENTION="1h")

    def rolled() -> list:
        open_store(url)
        try:
            return [(r.minute, r.submitted) for r in MinuteStat.select().where(MinuteStat.socket == "s1")]
        finally:
            db.close()

    with agent(env, "--name", "rollup-test"):
        got = wait_for(rolled, timeout=30, what="the agent's rollup")
    assert sorted(got) == [(base - dt.timedelta(minutes=6), 1), (base - dt.timedelta(minutes=5), 1)]


def test_after_an_outage_longer_than_the_retention_rollups_start_afresh(store):
    from ectool.store.models import Call, MinuteStat

    now = metrics.floor_minute(metrics.now())
    old = now - 3 * 60 * MINUTE
    Call.insert_many([call(i, at=old + i * MINUTE) for i in range(3)]).execute()
    metrics.rollup(old + 5 * MINUTE)  # the last rollup, three hours ago
    Call.insert_many([call(f"new{i}", at=now - (20 + i) * MINUTE) for i in range(2)]).execute()
    assert metrics.maintain("1h") == metrics.CHUNK  # not the three hours in between
    first, end = metrics.rolled_up()
    assert first == now - 21 * MINUTE and MinuteStat.select().where(MinuteStat.minute < first).count() == 0
    assert {r["socket"]: r["in"] for r in metrics.socket_stats(old - MINUTE)} == {"s1": 5}
