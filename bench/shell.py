"""The shell side: ``ec`` as a process in a pipeline, next to GNU parallel.

    python -m bench shell [--lines 100000] [--runs 20] [--workers 2] [--prefetch 32]
                          [--jobs 64] [--backends embedded[,distributed]]
                          [--parallel-lines N | --no-parallel]

On the embedded default (SQLite store and queue under a temporary EC_HOME; add
``distributed`` for PostgreSQL + RabbitMQ) with ``ec worker -c WORKERS`` running:
  * ``seq LINES | ec map noop``: wall time, lines/s, the ``ec`` process's RSS (sampled
    every 0.1 s: first sample, peak, last), the workers' RSS before and after, and the
    CPU per line of ``ec map``, the workers, PostgreSQL and RabbitMQ;
  * ``ec run noop`` as a whole process (start, import, submit, wait, print, exit): median
    of RUNS, on a warm worker; and ``ec --help``, median of RUNS;
  * ``seq N | parallel -j2 echo`` where GNU parallel is installed (skipped with a note if
    not): the same number of lines through a process per line, for scale.
First the ``ectool`` package is byte-compiled (``compileall``), as ``pip install`` does for
users: an editable checkout under ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile
every module it imports in every ``ec`` process (``--no-compile`` measures that).
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    PREFETCH,
    cpu_per_item,
    cpu_seconds,
    drop_schema,
    ec_argv,
    emit,
    machine,
    pg_schema,
    rss_mb,
    table,
)
from bench.core import backend_urls, ec_session  # noqa: E402


def timed_runs(argv: list[str], env: dict, runs: int) -> dict:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        times.append(time.perf_counter() - t)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    times.sort()
    return {"median_ms": round(statistics.median(times) * 1000, 1), "min_ms": round(times[0] * 1000, 1),
            "max_ms": round(times[-1] * 1000, 1), "runs": runs}


RSS_MARKS = (1_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)


def rss_at(samples: list[tuple[int, float]], per_line: float, line: float) -> float | None:
    """The first RSS sample (MB) taken once the output had reached ``line`` lines."""
    return next((round(rss, 1) for written, rss in samples if written / per_line >= line), None)


def rss_at_lines(samples: list[tuple[int, float]], per_line: float, produced: int) -> dict[int, float]:
    """The RSS (MB) when the output first reached each of :data:`RSS_MARKS` lines (those it
    reached): whether memory stays flat as the input grows."""
    marks = {mark: rss_at(samples, per_line, mark) for mark in RSS_MARKS if mark <= produced}
    return {mark: rss for mark, rss in marks.items() if rss is not None}


def largest(values: Sequence[float | None]) -> float | None:
    """The largest of the RSS figures that were read (a process may have gone)."""
    return max((v for v in values if v is not None), default=None)


def by_lines(marks: dict[int, float], last: float | None) -> str:
    """``1,000: 30.5, 10,000: 34.8, end: 39.0`` (MB)."""
    return ", ".join([f"{k:,}: {v}" for k, v in marks.items()] + ([f"end: {last}"] if last is not None else []))


def pipe(lines: int, argv: list[str], env: dict | None, out: Path, limit: float, workers: Sequence[int] = ()) -> dict:
    """``seq LINES | ARGV > OUT``, sampling the consumer's RSS and output; wall time and
    lines/s. Past ``limit`` seconds the consumer is stopped (by pid) and the lines written
    so far count (``stopped_at_limit``). Also the CPU each line cost the consumer, the
    ``workers`` (pids), PostgreSQL and RabbitMQ (``cpu_us_per_line``): where the machine's
    two cores went."""
    import resource

    import psutil

    cpu_before = cpu_seconds(workers)
    mine = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    seq = subprocess.Popen(["seq", str(lines)], stdout=subprocess.PIPE)
    with open(out, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, stdin=seq.stdout, stdout=fh, stderr=subprocess.PIPE)
    seq.stdout.close()
    samples: list[tuple[int, float]] = []  # (output bytes, RSS MB)
    worker_samples: list[tuple[int, float]] = []  # (output bytes, the largest worker RSS MB)
    ps = psutil.Process(proc.pid)
    stopped = False
    while proc.poll() is None:
        written = out.stat().st_size
        try:
            rss = ps.memory_info().rss / 2**20
            if rss > 1:  # not an exiting process's last breath
                samples.append((written, rss))
        except psutil.Error:
            break
        if workers:
            worker_samples.append((written, largest(rss_mb(workers)) or 0.0))
        if time.perf_counter() - t > limit:
            stopped = True
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            break
        time.sleep(0.1)
    err = proc.stderr.read().decode()
    proc.wait()
    seq.kill()
    seq.wait()
    wall = time.perf_counter() - t
    with open(out, "rb") as fh:
        produced = sum(1 for _ in fh)
    if not stopped and (proc.returncode != 0 or produced != lines):
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}, {produced}/{lines} lines: {err[-800:]}")
    cpu = cpu_per_item(cpu_before, cpu_seconds(workers), produced)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu["consumer"] = round((done.ru_utime + done.ru_stime - mine.ru_utime - mine.ru_stime) / max(produced, 1) * 1e6)
    res = {"lines": produced, "asked": lines, "wall_s": round(wall, 2), "lines_s": round(produced / wall, 1),
           "stopped_at_limit": stopped, "cpu_us_per_line": cpu}
    size = out.stat().st_size
    if samples and size:
        per_line = size / max(produced, 1)
        res |= {"rss_mb_at_10pct": rss_at(samples, per_line, 0.1 * produced),
                "rss_mb_peak": round(max(rss for _, rss in samples), 1),
                "rss_mb_last": round(samples[-1][1], 1),
                "rss_mb_at_lines": rss_at_lines(samples, per_line, produced)}
        if worker_samples:
            res["worker_rss_mb_at_lines"] = rss_at_lines(worker_samples, per_line, produced)
    return res


def compile_package() -> str:
    """Byte-compile the ``ectool`` package the ``ec`` processes import (``__pycache__``
    next to the sources, as ``pip install`` leaves them); says where."""
    import compileall

    import ectool

    where = Path(ectool.__file__).resolve().parent
    compileall.compile_dir(str(where), quiet=1)
    return f"compiled ({where})"


def stopped(r: dict) -> str:
    return " (stopped at --limit)" if r.get("stopped_at_limit") else ""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench shell", description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=PREFETCH)
    ap.add_argument("--jobs", type=int, help="ec map -j (calls in flight; ec's default when omitted)")
    ap.add_argument("--backends", default="embedded", help="comma-separated: embedded,distributed")
    ap.add_argument("--parallel-lines", type=int, help="lines for GNU parallel (default: --lines)")
    ap.add_argument("--no-parallel", action="store_true")
    ap.add_argument("--limit", type=float, default=240.0,
                    help="stop a pipeline after this many seconds and count the lines done (default 240)")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile the ectool package first (see above)")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - {"embedded", "distributed"}:
        ap.error("--backends: embedded and/or distributed")

    ec = ec_argv()
    results: dict = {"bytecode": "as found" if args.no_compile else compile_package()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EC_HOME"] = str(tmp / "home")
        for name in backends:
            schema = pg_schema() if name == "distributed" else None
            try:
                db_url, broker_url = backend_urls(name, tmp, schema)
                print(f"[shell] {name}: starting {args.workers} workers", file=sys.stderr, flush=True)
                with ec_session(db_url, broker_url, args.workers, args.prefetch, tmp) as s:
                    r: dict = {"ec_help": timed_runs([*ec, "--help"], s.env, args.runs),
                               "ec_run": timed_runs([*ec, "run", "noop"], s.env, args.runs)}
                    r["worker_rss_mb_before"] = rss_mb([w.pid for w in s.workers])
                    jobs = ["-j", str(args.jobs)] if args.jobs else []
                    r["ec_map"] = pipe(args.lines, [*ec, "map", *jobs, "noop"], s.env, tmp / "map.out",
                                       args.limit, [w.pid for w in s.workers])
                    r["worker_rss_mb_after"] = rss_mb([w.pid for w in s.workers])
                    print(f"[shell] {name}: {r}", file=sys.stderr, flush=True)
                    results[name] = r
            finally:
                if schema:
                    drop_schema(schema)
        par_lines = args.parallel_lines or args.lines
        if args.no_parallel:
            results["parallel"] = {"skipped": "--no-parallel"}
        elif shutil.which("parallel") is None:
            results["parallel"] = {"skipped": "GNU parallel is not installed (apt-get install parallel)"}
        else:
            print(f"[shell] seq {par_lines} | parallel -j2 echo", file=sys.stderr, flush=True)
            results["parallel"] = pipe(par_lines, ["parallel", "--will-cite", "-j2", "echo"], None,
                                       tmp / "parallel.out", args.limit)

    print(f"ec in a shell: {args.workers} workers, prefetch {args.prefetch}, {os.cpu_count()} CPUs ({' '.join(ec)}); "
          f"bytecode {results['bytecode']}")
    rows = []
    for name in backends:
        r = results[name]
        m = r["ec_map"]
        rows += [[f"seq {m['asked']} | ec map noop ({name})", f"{m['lines_s']:,.0f} lines/s",
                  f"{m['lines']} lines in {m['wall_s']} s{stopped(m)}; ec RSS {m.get('rss_mb_at_10pct')} MB at 10%, "
                  f"{m.get('rss_mb_peak')} peak; workers {r['worker_rss_mb_before']}->{r['worker_rss_mb_after']} MB"],
                 [f"  ec RSS by lines done ({name})", f"{m.get('rss_mb_peak')} MB peak",
                  by_lines(m.get("rss_mb_at_lines", {}), m.get("rss_mb_last"))],
                 [f"  worker RSS by calls done ({name})", f"{largest(r['worker_rss_mb_after'])} MB at the end",
                  by_lines(m.get("worker_rss_mb_at_lines", {}), largest(r["worker_rss_mb_after"]))],
                 [f"  CPU per line ({name})", f"{sum(m['cpu_us_per_line'].values()):,} us",
                  ", ".join(f"{k} {v}" for k, v in m["cpu_us_per_line"].items())],
                 [f"ec run noop, whole process ({name})", f"{r['ec_run']['median_ms']} ms",
                  f"median of {r['ec_run']['runs']} (min {r['ec_run']['min_ms']})"],
                 [f"ec --help ({name})", f"{r['ec_help']['median_ms']} ms", f"median of {r['ec_help']['runs']}"]]
    p = results["parallel"]
    if "skipped" in p:
        rows.append(["seq N | parallel -j2 echo", "skipped", p["skipped"]])
    else:
        rows.append([f"seq {p['asked']} | parallel -j2 echo", f"{p['lines_s']:,.0f} lines/s",
                     f"{p['lines']} lines in {p['wall_s']} s{stopped(p)}"])
    print(table(["what", "figure", "detail"], rows))
    emit({"bench": "shell", "workers": args.workers, "prefetch": args.prefetch, "jobs": args.jobs,
          "lines": args.lines, **machine(), **results})


if __name__ == "__main__":
    main()
