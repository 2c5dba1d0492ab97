"""``seq N | ec map work`` spread over several test hosts against one host, same run.

    python -m bench hosts [--lines N] [--hosts 3] [--task-ms 20] [--rounds 1]

Each configuration gets its own PostgreSQL schema and queue namespace and its own test
hosts (tests/hosts.py: network namespaces, an ``ec-agentd --cpus 1`` on each, reaching
PostgreSQL and RabbitMQ through their own links), a processor with one worker per host,
and the timed ``seq N | ec map work`` from the root namespace once every worker runs. The
task sleeps ``--task-ms`` (I/O-bound work: each host brings its capacity, the 2 cores are
not what limits it; ``--task-ms 0`` measures the shared machine instead). Configurations
alternate over ``--rounds``; the ratio is the median of the per-round ratios. Needs root
(network namespaces); every namespace and process is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import AMQP, PG, drop_schema, ec_argv, emit, pg_schema, table

TASK = '''

def work(line, ms={ms}):
    """The hosts bench's task: a line back after MS milliseconds (I/O-bound work)."""
    import time

    time.sleep(ms / 1000)
    return line
'''


def processor_repo(tmp: Path, task_ms: float) -> Path:
    """The sample processor plus a ``work`` function, committed to a fresh git repo."""
    import git

    from helpers import make_repo

    repo = make_repo(tmp / f"repo-{uuid.uuid4().hex[:6]}")
    module = repo / "pyfi" / "processors" / "sample.py"
    module.write_text(module.read_text() + TASK.format(ms=task_ms))
    r = git.Repo(repo)
    r.git.add(A=True)
    r.index.commit("the hosts bench's task")
    return repo


def running_workers() -> int:
    from ectool.store.models import Processor, Worker

    return Worker.select().join(Processor).where((Processor.name == "work") & (Worker.status == "running")).count()


def one_config(n_hosts: int, lines: int, task_ms: float, tmp: Path) -> dict:
    """Time ``seq LINES | ec map work`` with one worker on each of N_HOSTS test hosts."""
    from ectool import network
    from ectool.store import close_store, open_store
    from helpers import env_for, wait_for
    from hosts import hosts

    schema = pg_schema("ec_bench_hosts")
    db_url = f"{PG}?schema={schema}"
    tmp = tmp / f"{n_hosts}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    env = env_for(db_url, AMQP, EC_NAMESPACE=f"bh{uuid.uuid4().hex[:10]}")
    try:
        open_store(db_url)
        repo = processor_repo(tmp, task_ms)
        network.add_trust(f"file://{repo}")
        network.add_queue("q", "direct")
        network.add_processor("work", f"file://{repo}", "pyfi.processors.sample", concurrency=n_hosts)
        network.add_socket("work", "q", "work", "work")
        with hosts(n_hosts, tmp, db_url, AMQP, env):
            wait_for(lambda: running_workers() == n_hosts, timeout=180, what=f"{n_hosts} workers")
            out = tmp / "map.out"
            t = time.perf_counter()
            with open(out, "wb") as fh:
                seq = subprocess.Popen(["seq", str(lines)], stdout=subprocess.PIPE)
                done = subprocess.run([*ec_argv(), "map", "work"], env=env, stdin=seq.stdout, stdout=fh,
                                      stderr=subprocess.PIPE, timeout=1800)
                seq.stdout.close()
                seq.wait()
            wall = time.perf_counter() - t
            _delete_queues(env)
        got = out.read_text().split()
        if done.returncode != 0 or got != [str(i) for i in range(1, lines + 1)]:
            raise RuntimeError(f"ec map on {n_hosts} host(s) exited {done.returncode} with {len(got)} of "
                               f"{lines} lines: {done.stderr.decode()[-2000:]}")
        return {"hosts": n_hosts, "lines": lines, "seconds": round(wall, 3), "lines_s": round(lines / wall, 1)}
    finally:
        close_store()
        drop_schema(schema)


def _delete_queues(env: dict) -> None:
    from ectool.agents import control_queue
    from ectool.calls import broker_queue
    from ectool.store.models import Agent
    from ectool.transport import connect

    with connect(AMQP) as t:
        t.delete_queue(broker_queue("work", env["EC_NAMESPACE"]))
        for a in Agent.select(Agent.name):
            t.delete_queue(control_queue(a.name, env["EC_NAMESPACE"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench hosts", description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=3000)
    ap.add_argument("--hosts", type=int, default=3, help="hosts of the spread configuration (default 3)")
    ap.add_argument("--task-ms", type=float, default=20.0, help="what each call sleeps (default 20 ms)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    from hosts import unavailable

    reason = unavailable()
    if reason:
        print(f"bench hosts: {reason}", file=sys.stderr)
        return 1
    runs: dict[int, list[dict]] = {1: [], args.hosts: []}
    with tempfile.TemporaryDirectory() as d:
        os.environ["EC_HOME"] = str(Path(d) / "home")
        for r in range(args.rounds):
            order = [1, args.hosts] if r % 2 == 0 else [args.hosts, 1]
            for n in order:
                print(f"[hosts] round {r + 1}: {n} host(s)", file=sys.stderr, flush=True)
                runs[n].append(one_config(n, args.lines, args.task_ms, Path(d)))
    ratios = [spread["lines_s"] / one["lines_s"] for one, spread in zip(runs[1], runs[args.hosts], strict=True)]
    med = {n: round(statistics.median(x["lines_s"] for x in rs), 1) for n, rs in runs.items()}
    print(table(["configuration", "lines/s (median)", "rounds"],
                [[f"seq {args.lines} | ec map work, {n} host(s) x 1 worker", f"{med[n]:,.0f}", str(len(runs[n]))]
                 for n in runs] +
                [[f"ratio {args.hosts} hosts / 1 host", f"{statistics.median(ratios):.2f}", str(len(ratios))]]))
    emit({"bench": "hosts", "lines": args.lines, "task_ms": args.task_ms, "rounds": args.rounds,
                      "one_host": {"lines_s": med[1], "runs": runs[1]},
                      "spread": {"hosts": args.hosts, "lines_s": med[args.hosts], "runs": runs[args.hosts]},
          "ratio": round(statistics.median(ratios), 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
