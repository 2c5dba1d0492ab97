"""Each call of a worker's batch is recorded with its own started and finished times."""

from __future__ import annotations

import json

import pytest

from ectool.calls import Client
from ectool.config import load
from ectool.store import open_store
from ectool.store.models import Call
from helpers import ec, sample_network, wait_for, workers


@pytest.fixture
def net(tmp_path, broker_url):
    with sample_network(tmp_path, broker_url) as network:
        yield network


def test_calls_run_in_one_batch_show_their_own_times(net):
    """Issue 21: three one-second calls run one after another in one batch were each
    recorded with the whole batch's 3 s, so `ec stats` showed p50 3002 ms."""
    env, proc = net
    client = Client(load(db=env["EC_DB"], broker=env["EC_BROKER"]))
    try:
        ids = client.submit("sleep", [([1], {})] * 3)  # queued before the worker starts:
    finally:                                            # it takes all three in one batch
        client.close()
    open_store(env["EC_DB"])
    with workers(env, proc, 1, "--prefetch", "4"):
        rows = wait_for(lambda: [c for c in Call.select().where(Call.id.in_(ids)) if c.status == "done"]
                        if Call.select().where(Call.id.in_(ids) & (Call.status == "done")).count() == 3 else None,
                        timeout=60, what="three calls done")
    spans = sorted((c.started, c.finished) for c in rows)
    for started, finished in spans:  # its own second, not the whole batch's three
        assert 0.9 <= (finished - started).total_seconds() < 2.9, spans
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, spans  # one worker: one call after another, none overlapping
    stats = ec("stats", "sleep", "--json", env=env)
    assert stats.returncode == 0, stats.stderr
    assert 900 <= json.loads(stats.stdout)["sockets"][0]["p50_ms"] < 2900
