"""Every benchmark runs end to end at tiny sizes, so none can rot (issue 9).

No timing is asserted: a figure on a shared machine proves nothing. Each test runs
``python -m bench NAME`` as users do, checks it exits 0, and reads the one JSON line it
ends with for figures that show the workload really ran. The benches start and stop their
own worker processes by pid and remove their queues and PostgreSQL schemas.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_service

ROOT = Path(__file__).resolve().parents[1]


def bench(name: str, *args: str, timeout: float = 240) -> dict:
    """Run ``python -m bench NAME ARGS`` from the repository root; its JSON line."""
    done = subprocess.run([sys.executable, "-m", "bench", name, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"bench {name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == name
    return result


@pytest.fixture
def services() -> None:
    need_service("RabbitMQ", "127.0.0.1", 5672)
    need_service("PostgreSQL", "127.0.0.1", 5432)


def test_every_bench_has_a_smoke_test():
    tree = ast.parse((ROOT / "bench" / "__main__.py").read_text())
    benches = next(ast.literal_eval(node.value) for node in tree.body
                   if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "BENCHES")
    tested = {name[len("test_bench_"):-len("_smoke")] for name in globals()
              if name.startswith("test_bench_") and name.endswith("_smoke")}
    assert set(benches) - tested == set()


def test_bench_ceiling_smoke(services):
    result = bench("ceiling", "-n", "50", "--seq", "5")
    assert result["raw"]["n"] == 50 and result["raw"]["calls_per_s"] > 0 and result["raw"]["p50_ms"] > 0
    assert result["transport_publish"]["msgs_per_s"] > 0


def test_bench_floor_smoke(services):
    result = bench("floor", "--calls", "40", "--seq", "5")
    assert result["calls"] == 40 and result["throughput_calls_s"] > 0 and result["seq_p50_ms"] > 0


def test_bench_celery_smoke(services):
    pytest.importorskip("celery", reason="SKIPPED: celery is not installed (pip install -e '.[dev]')")
    result = bench("celery", "--calls", "20", "--seq", "3", "--loop", "10", "--chords", "1", "--members", "3",
                   "--chains", "1", "--steps", "2")
    assert result["default"]["throughput_calls_s"] > 0 and result["confirms"]["seq_p50_ms"] > 0
    assert result["default"]["loop_calls_s"] > 0
    assert result["chord_p50_ms"] > 0 and result["chain_p50_ms"] > 0


def test_bench_ec_smoke(services):
    result = bench("ec", "--calls", "20", "--seq", "3", "--loop", "10", "--funnels", "1", "--members", "3",
                   "--pipelines", "1", "--steps", "2")
    for backend in ("embedded", "distributed"):
        r = result[backend]
        assert r["throughput_calls_s"] > 0 and r["seq_p50_ms"] > 0 and r["loop_calls_s"] > 0
        assert r["funnel_p50_ms"] > 0 and r["pipeline_stored_p50_ms"] > 0


def test_bench_core_smoke(services):
    result = bench("core", "--calls", "20", "--seq", "3")
    assert result["embedded"]["throughput_calls_s"] > 0 and result["distributed"]["seq_p50_ms"] > 0


def test_bench_compare_smoke(services):
    """One round of every system (ceiling, floor, celery, ec) and the ratios between them."""
    pytest.importorskip("celery", reason="SKIPPED: celery is not installed (pip install -e '.[dev]')")
    result = bench("compare", "--quick", "--rounds", "1", timeout=280)
    assert result["failed"] == []
    for system in ("ceiling", "floor", "celery", "ec", "ec embedded"):
        assert result["medians"][system]["throughput_calls_s"] > 0, system
    for ratio in ("throughput ec/celery", "seq p50 ec/floor", "seq p50 floor/celery", "seq p50 ec/celery+confirms",
                  "pipeline10 ec/chain10", "loop ec/celery"):
        assert result["ratios"][ratio]["median"] > 0, ratio


def test_bench_client_smoke():
    """The client side alone, on the embedded backend."""
    result = bench("client", "--only", "embedded", "--calls", "30", "--seq", "5", "--rounds", "1", timeout=120)
    assert result["embedded"]["submit_batch_calls_s"] > 0


def test_bench_phases_smoke():
    result = bench("phases", "--only", "embedded", "--seq", "3", "--funnels", "1", "--members", "3",
                   "--pipelines", "1", "--steps", "3", timeout=120)
    seq, fun, pipe = result["embedded"]["seq"], result["embedded"]["funnel"], result["embedded"]["pipeline"]
    assert seq["total"] >= seq["submit"] > 0 and {"queued", "running", "reply"} <= set(seq)
    assert fun["total"] > 0 and "join" in fun
    assert pipe["total"] > 0 and {"step running", "between steps", "caller told"} <= set(pipe)


def test_bench_shell_smoke():
    """On the embedded backend; the source tree is left as it is (--no-compile)."""
    result = bench("shell", "--backends", "embedded", "--lines", "20", "--runs", "1", "--no-parallel",
                   "--no-compile", "--limit", "60")
    assert result["bytecode"] == "as found"
    assert result["embedded"]["ec_map"]["lines"] == 20
    assert result["embedded"]["ec_run"]["runs"] == 1
    cpu = result["embedded"]["ec_map"]["cpu_us_per_line"]
    # the consumer's start-up alone is tens of ms over 20 lines; the workers' few ms may
    # fall under the kernel's 10 ms tick (then 0), so only their presence is checked
    assert set(cpu) == {"consumer", "workers", "postgres", "rabbitmq"} and cpu["consumer"] > 0
    assert all(isinstance(v, int) and v >= 0 for v in cpu.values()), cpu


def test_bench_profile_smoke():
    """py-spy on an embedded client and worker (py-spy comes with the dev extra)."""
    if not (shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")):
        pytest.skip("SKIPPED: py-spy is not installed (pip install -e '.[dev]')")
    result = bench("profile", "--backend", "embedded", "--seconds", "2", "--calls", "30", "--workers", "1")
    assert result["throughput_calls_s"] > 0 and result["client"]["samples"] > 0


def test_bench_faults_smoke():
    """One fault scenario that restarts no service (poison messages, embedded)."""
    result = bench("faults", "--only", "poison", "--kind", "sqlite")
    assert result["ok"] is True and result["rows"][0]["lost"] == 0


def test_bench_hosts_smoke(services):
    """1 test host against 3 (network namespaces: needs root, else skipped or failed)."""
    from conftest import REQUIRE

    from hosts import unavailable

    reason = unavailable()
    if reason:
        if REQUIRE:
            pytest.fail(f"EC_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"SKIPPED, NO TEST HOSTS: {reason}")
    result = bench("hosts", "--lines", "30", "--task-ms", "1")
    assert result["one_host"]["lines_s"] > 0 and result["spread"]["hosts"] == 3 and result["ratio"] > 0
