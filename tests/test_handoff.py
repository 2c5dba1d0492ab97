"""The pipeline hand-off: a worker that records a step's outcome and serves the next step
runs that step itself (its row written running in the same commit, no message), on both
transports; killed mid-chain, redelivery and recovery finish the chain, and no step that
finished runs again."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import SOCKETS, kill_workers, sample_network, wait_children, workers

STEP_SOCKETS = {**SOCKETS, "step": ("mark_step", {})}


@pytest.fixture
def net(tmp_path, broker_url, monkeypatch):
    from ectool import api

    with sample_network(tmp_path, broker_url, sockets=STEP_SOCKETS) as (env, proc):
        for key in ("EC_DB", "EC_BROKER", "EC_NAMESPACE"):
            monkeypatch.setenv(key, env[key])  # the in-process API uses the same store and broker
        try:
            yield env, proc
        finally:
            api.close()


def steps(directory: Path, n: int, seconds: float):
    """A pipeline of ``n`` mark_step calls, each recording its finished runs in ``directory``."""
    from ectool.api import Socket, pipeline

    step = Socket(name="step").p
    return pipeline([step(0, str(directory), "s0", seconds)]
                    + [step(str(directory), f"s{i}", seconds) for i in range(1, n)])


def step_rows(root: str) -> list:
    from ectool.store.models import Call

    return list(Call.select().where((Call.root == root) & (Call.socket == "step")))


def test_a_pipeline_stays_on_the_worker_that_ran_its_first_step(net, tmp_path):
    env, proc = net
    runs = tmp_path / "runs"
    runs.mkdir()
    with workers(env, proc, 2) as w:
        wait_children(w, 2)
        handle = steps(runs, 10, 0).delay()
        assert handle.get(timeout=60) == 10
    rows = step_rows(handle.id)
    assert len(rows) == 10 and all(r.status == "done" and r.attempts == 1 for r in rows)
    # each step was kept by the worker that finished the one before: one worker ran them all
    assert len({(r.host, r.worker_pid) for r in rows}) == 1
    # kept steps skip the claim, yet record the code that ran them (issue 19's provenance)
    assert {(r.processor, r.runtime) for r in rows} == {(proc, "python")}
    assert len({r.commit for r in rows}) == 1 and rows[0].commit
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"s{i}" for i in range(10))


@pytest.mark.slow
def test_kill_9_mid_chain_finishes_it_and_no_finished_step_runs_again(net, tmp_path):
    from ectool.workflow import node_id

    env, proc = net
    runs = tmp_path / "runs"
    runs.mkdir()

    def running_a_step(pid: int) -> bool:
        from ectool.store.models import Call

        return Call.select().where((Call.status == "running") & (Call.worker_pid == pid)
                                   & (Call.socket == "step")).exists()

    with workers(env, proc, 2) as w:
        wait_children(w, 2)
        handle = steps(runs, 20, 0.15).delay()
        kill_workers(w, 2, pause=0.5, busy=running_a_step)
        assert handle.get(timeout=180) == 20
    rows = {r.id: r for r in step_rows(handle.id)}
    assert len(rows) == 20 and all(r.status == "done" for r in rows.values())
    # every run of a step was charged as an attempt of it: only a step whose worker died
    # before its outcome was committed ran again, never one whose outcome was recorded
    # (the task records its run just before it returns, so a kill can land in between)
    finished = {p.name: p.read_text().split() for p in runs.iterdir()}
    assert sorted(finished) == sorted(f"s{i}" for i in range(20))
    for i in range(20):
        row = rows[node_id(handle.id, [i])]
        assert len(finished[f"s{i}"]) <= row.attempts, (i, finished[f"s{i}"], row.attempts)
    assert sum(len(pids) for pids in finished.values()) <= 20 + 2  # at most one more run per kill
    assert len({pid for pids in finished.values() for pid in pids}) >= 2, "the kills landed on no step"
