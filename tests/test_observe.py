"""Observability: the event bus, metrics from the store, `ec stats`, `ec listen`, `ec top`.

Pure functions are checked table-driven; `ec stats --json` against calls written with known
timestamps; `ec listen` as a real subprocess on both transports, fed by the bus of this
process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from ectool import events, metrics
from ectool.cli import cli
from ectool.config import load
from ectool.transport.base import topic_matches
from helpers import env_for, wait_for

pytestmark = pytest.mark.timeout(60)


# -- pure functions ----------------------------------------------------------------------


@pytest.mark.parametrize("values, q, expected", [
    ([], 50, None),
    ([7.0], 99, 7.0),
    ([1, 2, 3, 4], 0, 1),
    ([1, 2, 3, 4], 100, 4),
    ([1, 2, 3, 4], 50, 2.5),
    ([100, 200, 300, 400, 500], 95, 480),
    ([100, 200, 300, 400, 500], 99, 496),
    (list(range(1, 101)), 90, 90.1),
])
def test_percentile(values, q, expected):
    got = metrics.percentile(values, q)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_percentile_rejects_out_of_range():
    with pytest.raises(ValueError):
        metrics.percentile([1, 2], 101)


@pytest.mark.parametrize("seconds, width, n", [(3600, 60, 60), (59, 60, 1), (61, 60, 2), (0, 60, 1), (900, 60, 15)])
def test_bucket_count(seconds, width, n):
    assert metrics.bucket_count(seconds, width) == n


@pytest.mark.parametrize("counts, n, dense", [({}, 3, [0, 0, 0]), ({0: 2, 2: 5}, 3, [2, 0, 5]), ({4: 1}, 3, [0, 0, 0])])
def test_fill(counts, n, dense):
    assert metrics.fill(counts, n) == dense


@pytest.mark.parametrize("count, seconds, rate", [(9, 3600, 0.15), (10, 60, 10.0), (5, 0, 0.0), (1, 30, 2.0)])
def test_per_minute(count, seconds, rate):
    assert metrics.per_minute(count, seconds) == rate


@pytest.mark.parametrize("values, text", [([], ""), ([0, 0], "  "), ([1, 2, 4, 8], "▂▃▅█"), ([0, 5, 5], " ██")])
def test_spark(values, text):
    assert metrics.spark(values) == text


@pytest.mark.parametrize("pattern, key, matches", [
    ("#", "call.done", True), ("call.*", "call.done", True), ("call.*", "call", False),
    ("call.#", "call", True), ("call.#", "call.done.x", True), ("*.done", "call.done", True),
    ("call.done", "call.done", True), ("call.done", "call.failed", False), ("worker.*", "call.done", False),
    ("*", "call.done", False), ("#.done", "a.b.done", True),
])
def test_topic_matches(pattern, key, matches):
    assert topic_matches(pattern, key) is matches


@pytest.mark.parametrize("kinds, patterns", [
    (None, None), ([], None), (["call"], ["call.*"]), (["call.done", "worker.*", " agent "], ["call.done", "worker.*", "agent.*"]),
    (["#"], ["#"]),
])
def test_event_patterns(kinds, patterns):
    assert events.patterns(kinds) == patterns


def test_encode_decodes_short_results_only():
    assert json.loads(events.encode({"kind": "call.done", "result_json": '{"a": [1]}'})) == {
        "kind": "call.done", "result": {"a": [1]}}
    long = json.loads(events.encode({"kind": "call.done", "result_json": json.dumps("x" * 10_000)}))
    assert long == {"kind": "call.done", "result_truncated": True}


def test_a_flush_is_packed_into_one_message_per_kind_in_order():
    batch = [{"kind": "call.started", "call": "a"}, {"kind": "call.done", "call": "a"},
             {"kind": "call.started", "call": "b"}, {"kind": "worker.heartbeat", "pid": 1}]
    wire = events.pack(batch)
    assert [kind for kind, _ in wire] == ["call.started", "call.done", "worker.heartbeat"]
    assert [e["call"] for e in events.unpack(wire[0][1])] == ["a", "b"]
    assert json.loads(wire[1][1]) == {"kind": "call.done", "call": "a"}  # one event: a plain object
    assert [e for _, body in wire for e in events.unpack(body)] == [batch[0], batch[2], batch[1], batch[3]]
    assert events.unpack(b"not json") == [] and events.unpack(b"[1, {}]") == [{}]


# -- the bus -----------------------------------------------------------------------------


@pytest.fixture
def exchange_cleanup(broker_url):
    """Delete this test's event exchange from RabbitMQ afterwards (it is durable)."""
    yield
    if broker_url.startswith("amqp"):
        from ectool.transport.amqp_connection import open_connection

        conn = open_connection(broker_url, "test cleanup")
        try:
            conn.channel().exchange_delete(events.exchange_name(os.environ["EC_NAMESPACE"]))
        finally:
            conn.close()


def test_bus_drops_oldest_and_counts(monkeypatch):
    monkeypatch.setattr(events.Bus, "_start", lambda self: None)  # no flusher: the buffer fills
    bus = events.Bus(capacity=3)
    for i in range(5):
        bus.publish("call.queued", call=str(i), socket=None)
    assert [e["call"] for e in bus.buffer] == ["2", "3", "4"]
    assert bus.dropped == 2
    assert "socket" not in bus.buffer[0]  # None fields are left out
    assert set(bus.buffer[0]) == {"time", "kind", "host", "pid", "call"}


def test_bus_never_blocks_on_a_dead_broker(monkeypatch):
    """The flusher hangs connecting to a broker that does not answer: publishing goes on
    (it would hang here too otherwise), the oldest events drop, and every loss is counted."""
    import threading

    from ectool.errors import Unreachable

    connecting, release = threading.Event(), threading.Event()

    def hanging_broker(config):
        connecting.set()
        release.wait()
        raise Unreachable("broker unreachable")

    monkeypatch.setattr("ectool.transport.open_transport", hanging_broker)
    bus = events.Bus(load(broker="amqp://guest:guest@127.0.0.1:1/%2F"), capacity=1000)
    bus.publish("call.done", call="first")
    assert connecting.wait(30)  # the flusher took "first" and hangs in connect
    for i in range(20_000):
        bus.publish("call.done", call=str(i))
    assert len(bus.buffer) == 1000 and bus.dropped == 19_000  # overflowed: counted, not raised
    release.set()  # the connect fails; so does the next one, for the 1,000 left
    wait_for(lambda: bus.dropped == 20_001, timeout=30, every=0.05, what="the dropped events counted")
    bus.close(timeout=0.1)


def test_bus_delivers_to_subscribers(broker_url, tmp_path, exchange_cleanup):
    config = load(db=f"sqlite:///{tmp_path / 'ec.db'}", broker=broker_url)
    sub = events.Subscription(config, ["call", "worker.heartbeat"])
    bus = events.Bus(config)
    try:
        bus.publish("agent.online", agent="a1")  # not subscribed
        bus.publish("call.done", call="c1", socket="s", ms=1.5, result_json="[1, 2]")
        bus.publish("worker.heartbeat", processor="p", cpu_percent=3.0)
        assert bus.flush(5)
        got = [sub.get(timeout=5), sub.get(timeout=5)]
        assert [e["kind"] for e in got] == ["call.done", "worker.heartbeat"]
        assert got[0]["call"] == "c1" and got[0]["result"] == [1, 2] and got[0]["ms"] == 1.5
        assert got[0]["host"] and got[0]["pid"] == os.getpid() and got[0]["time"] > 0
        assert sub.get(timeout=0.3) is None
        assert bus.sent == 3 and bus.dropped == 0
    finally:
        bus.close()
        sub.close()


def test_emit_is_off_with_ec_events_0(monkeypatch):
    monkeypatch.setenv("EC_EVENTS", "0")
    bus = events.Bus()
    bus.publish("call.done", call="x")
    assert not bus.buffer and bus.thread is None


# -- metrics from the store: ec stats ------------------------------------------------------


def seed(db_url: str) -> dt.datetime:
    """A network with sockets s1 (proc1) and s2, and calls at known times; returns "now"."""
    from ectool import network
    from ectool.store import open_store
    from ectool.store.models import Call, now

    open_store(db_url)
    network.add_queue("q")
    network.add_processor("proc1", "file:///nowhere", "mod")
    network.add_socket("s1", "q", "proc1", "f")
    network.add_socket("s2", "q", "proc1", "g")
    # 10 s into a minute: every call below submits and finishes within that one minute
    t = (now() - dt.timedelta(minutes=30)).replace(second=10, microsecond=0)
    ms = dt.timedelta(milliseconds=1)
    rows = []
    for i, took in enumerate((100, 200, 300, 400)):
        rows.append(dict(id=f"d{i}", socket="s1", root=f"d{i}", status="done", submitted=t,
                         started=t + 1000 * ms, finished=t + (1000 + took) * ms))
    rows += [
        dict(id="f1", socket="s1", root="f1", status="failed", submitted=t, started=t + 1000 * ms,
             finished=t + 1500 * ms, error_type="ValueError", error_message="boom"),
        dict(id="x1", socket="s1", root="x1", status="dead", submitted=t, finished=t + 100 * ms),
        dict(id="r1", socket="s1", root="r1", status="running", submitted=t, started=t),
        dict(id="q1", socket="s1", root="q1", status="queued", submitted=t),
        dict(id="q2", socket="s1", root="q2", status="queued", submitted=t),
        dict(id="old", socket="s1", root="old", status="done", submitted=t - dt.timedelta(hours=2),
             started=t - dt.timedelta(hours=2), finished=t - dt.timedelta(hours=2) + 5 * ms),
        dict(id="s2a", socket="s2", root="s2a", status="done", submitted=t, started=t, finished=t + 10 * ms),
    ]
    Call.insert_many(rows).execute()
    return t


def test_stats_json_numbers(db_url, tmp_path):
    seed(db_url)
    broker = f"sqlite:///{tmp_path / 'queue.db'}"
    result = CliRunner().invoke(cli, ["--db", db_url, "--broker", broker, "stats", "--since", "1h", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    s1 = next(s for s in out["sockets"] if s["socket"] == "s1")
    assert {k: s1[k] for k in (
        "in", "out", "done", "failed", "dead", "queued", "running", "in_per_min", "out_per_min", "depth")} == {
        "in": 9, "out": 6, "done": 4, "failed": 1, "dead": 1, "queued": 2, "running": 1,
        "in_per_min": 0.15, "out_per_min": 0.1, "depth": 0}
    assert s1["failure_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert (s1["p50_ms"], s1["p95_ms"], s1["p99_ms"]) == pytest.approx((300, 480, 496), abs=1.5)
    assert (s1["wait_p50_ms"], s1["wait_p95_ms"]) == pytest.approx((1000, 1000), abs=1.5)
    assert [s["socket"] for s in out["sockets"]] == ["s1", "s2"]  # busiest first
    assert out["calls"] == {"queued": 2, "running": 1, "retrying": 0, "done": 6, "failed": 1, "dead": 1,
                            "cancelled": 0}
    assert out["seconds"] == pytest.approx(3600, abs=5)
    one = json.loads(CliRunner().invoke(cli, ["--db", db_url, "--broker", broker, "stats", "s2", "--json"]).stdout)
    assert [s["socket"] for s in one["sockets"]] == ["s2"] and one["sockets"][0]["p50_ms"] == pytest.approx(10, abs=1.5)


def test_stats_json_reads_history_after_the_calls_are_deleted(db_url, tmp_path):
    """`ec stats` rolls whole minutes up before reading; once the Call rows older than a
    minute are gone, their counts and (approximate) latencies still come from the rollups."""
    from ectool.store.models import Call, MinuteStat, now

    t = seed(db_url)
    broker = f"sqlite:///{tmp_path / 'queue.db'}"

    def stats(*args: str) -> dict:
        result = CliRunner().invoke(cli, ["--db", db_url, "--broker", broker, "stats", "--since", "1h", "--json",
                                          *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    before = stats()
    assert before["rolled_up"] is not None and MinuteStat.select().count() > 0
    Call.delete().where(Call.submitted < now() - dt.timedelta(minutes=1)).execute()
    assert Call.select().count() == 0
    after = stats("--per-minute")
    s1_before = next(s for s in before["sockets"] if s["socket"] == "s1")
    s1 = next(s for s in after["sockets"] if s["socket"] == "s1")
    keys = ("in", "out", "done", "failed", "dead", "cancelled", "retried", "in_per_min", "failure_rate")
    assert {k: s1[k] for k in keys} == {k: s1_before[k] for k in keys}
    assert (s1["in"], s1["out"], s1["done"], s1["failed"], s1["dead"]) == (9, 6, 4, 1, 1)
    assert (s1["queued"], s1["running"]) == (0, 0)  # right now: those rows are gone too
    assert s1_before["latency_exact"] is True and s1["latency_exact"] is False
    assert (s1["p50_ms"], s1["p95_ms"], s1["p99_ms"]) == pytest.approx((300, 480, 496), rel=0.03)
    assert s1["wait_p50_ms"] == pytest.approx(1000, rel=0.03)
    minute = t.replace(second=0, microsecond=0).isoformat(timespec="minutes") + "Z"
    assert [(m["minute"], m["in"], m["out"], m["failed"], m["dead"]) for m in s1["minutes"]] == [(minute, 9, 6, 1, 1)]
    assert s1["minutes"][0]["p50_ms"] == pytest.approx(300, abs=1.5)  # exact within its minute
    s2 = next(s for s in after["sockets"] if s["socket"] == "s2")
    assert (s2["in"], s2["done"], len(s2["minutes"])) == (1, 1, 1)
    assert "minutes" not in s1_before
    text = CliRunner().invoke(cli, ["--db", db_url, "--broker", broker, "stats", "--per-minute"])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["minute", "socket", "in", "out"]
    assert [line.split("\t")[1:4] for line in lines[1:]] == [["s1", "9", "6"], ["s2", "1", "1"]]


def test_stats_text_and_errors(tmp_path):
    db = f"sqlite:///{tmp_path / 'ec.db'}"
    seed(db)
    broker = f"sqlite:///{tmp_path / 'queue.db'}"
    text = CliRunner().invoke(cli, ["--db", db, "--broker", broker, "stats", "--since", "3h"])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["socket", "in", "out"]
    assert lines[1].split("\t")[:3] == ["s1", "10", "7"]
    workers = CliRunner().invoke(cli, ["--db", db, "--broker", broker, "stats", "--workers"])
    assert workers.exit_code == 0 and workers.stdout.startswith("processor\thost")
    missing = CliRunner().invoke(cli, ["--db", db, "--broker", broker, "stats", "nope"])
    assert missing.exit_code == 2 and "unknown socket" in missing.output
    bad = CliRunner().invoke(cli, ["--db", db, "--broker", broker, "stats", "--since", "soon"])
    assert bad.exit_code == 2


def test_series_buckets_per_minute(tmp_path):
    from ectool.store.models import now

    t = seed(f"sqlite:///{tmp_path / 'ec.db'}")
    got = metrics.series(t - dt.timedelta(minutes=1), t + dt.timedelta(minutes=2))
    assert got["s1"]["in"] == [0, 9, 0]
    assert got["s1"]["out"] == [0, 6, 0] and got["s1"]["failed"] == [0, 2, 0]
    assert got["s2"]["out"] == [0, 1, 0]
    assert now() > t


def test_top_once(tmp_path):
    db = f"sqlite:///{tmp_path / 'ec.db'}"
    seed(db)
    result = CliRunner().invoke(cli, ["--db", db, "--broker", f"sqlite:///{tmp_path / 'q.db'}", "top", "--once",
                                      "--since", "1h"])
    assert result.exit_code == 0, result.output
    assert "busiest sockets" in result.stdout and "workers" in result.stdout
    assert "s1" in result.stdout and "queued 2" in result.stdout


def test_light_commands_never_import_textual():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom ectool.cli import cli\n"
            "for args in (['--help'], ['run', '--help'], ['stats', '--help'], ['listen', '--help'],"
            " ['top', '--help'], ['dash', '--help']):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
            "import ectool.worker.runtime, ectool.events, ectool.metrics, ectool.calls\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- ec listen ---------------------------------------------------------------------------


class Lines:
    """Lines of a subprocess's pipe, read by a thread (select() would miss lines already
    buffered by the text wrapper)."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.ended = threading.Event()  # the pipe's end was read
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        try:
            for line in stream:
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.ended.set()

    def get(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return ""


def test_listen_streams_json_lines(broker_url, tmp_path, exchange_cleanup):
    db = f"sqlite:///{tmp_path / 'ec.db'}"
    seed(db)
    env = env_for(db, broker_url)
    config = load(db=db, broker=broker_url)
    proc = subprocess.Popen([sys.executable, "-m", "ectool", "listen", "proc1", "--events", "call,worker"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bus = events.Bus(config)
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        assert "listening" in err.get(20)
        bus.publish("agent.online", agent="a")  # not asked for
        bus.publish("call.done", call="c1", socket="s1", result_json='"hi"')
        bus.publish("call.done", call="c2", socket="elsewhere")  # not proc1's
        bus.publish("worker.heartbeat", processor="proc1", cpu_percent=1.0)
        bus.publish("call.failed", call="c3", socket="s2", error_type="ValueError")
        assert bus.flush(5)
        got = [json.loads(out.get(10) or "null") for _ in range(3)]
        assert [(e["kind"], e.get("call")) for e in got] == [
            ("call.done", "c1"), ("worker.heartbeat", None), ("call.failed", "c3")]
        assert got[0]["result"] == "hi"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert err.ended.wait(30)  # the reader thread took in the last lines
        rest = "".join(list(err.lines.queue))
        assert "Traceback" not in rest and "Aborted" not in rest
    finally:
        bus.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_listen_count_and_closed_pipe(tmp_path):
    broker = f"sqlite:///{tmp_path / 'queue.db'}"
    env = env_for(f"sqlite:///{tmp_path / 'ec.db'}", broker)
    config = load(db=env["EC_DB"], broker=broker)
    counted = subprocess.Popen([sys.executable, "-m", "ectool", "listen", "--count", "2"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    piped = subprocess.Popen([sys.executable, "-m", "ectool", "listen"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bus = events.Bus(config)
    try:
        assert "listening" in counted.stderr.readline() and "listening" in piped.stderr.readline()
        bus.publish("call.queued", call="a")
        bus.publish("call.queued", call="b")
        assert bus.flush(5)
        assert counted.wait(10) == 0
        assert [json.loads(x)["call"] for x in counted.stdout.read().splitlines()] == ["a", "b"]
        assert json.loads(piped.stdout.readline())["call"] == "a"
        piped.stdout.close()  # like `| head -1`: the next write hits a closed pipe
        stop = threading.Event()

        def keep_publishing():
            while not stop.is_set():
                bus.publish("call.queued", call="more")
                time.sleep(0.05)

        feeder = threading.Thread(target=keep_publishing)
        feeder.start()
        try:
            assert piped.wait(10) == 0
        finally:
            stop.set()
            feeder.join()
        assert "Traceback" not in piped.stderr.read()
    finally:
        bus.close()
        for p in (counted, piped):
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdout, p.stderr):
                if not f.closed:
                    f.close()


def test_subscription_reconnects_after_a_lost_connection(amqp_url, tmp_path):
    import socket

    config = load(db=f"sqlite:///{tmp_path / 'ec.db'}", broker=amqp_url)
    sub = events.Subscription(config, ["call"])
    bus = events.Bus(config)
    try:
        sub._stream._conn._impl._transport._sock.shutdown(socket.SHUT_RDWR)  # a broker restart, say
        deadline = time.monotonic() + 15
        got, saw_loss = None, False
        while got is None and time.monotonic() < deadline:
            sub.get(timeout=0.3)
            saw_loss |= sub.problem is not None  # noticed, and waiting to reconnect
            if saw_loss and sub.problem is None:  # back: a new queue bound to the exchange
                bus.publish("call.done", call="after")
                bus.flush(2)
                got = sub.get(timeout=1)
        assert saw_loss and got is not None and got["call"] == "after"
    finally:
        bus.close()
        sub.close()
        from ectool.transport.amqp_connection import open_connection

        conn = open_connection(amqp_url, "test cleanup")
        try:
            conn.channel().exchange_delete(events.exchange_name(config.namespace))
        finally:
            conn.close()
