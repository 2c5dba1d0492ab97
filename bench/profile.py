"""Where ec spends its time under load: py-spy on the client and on each worker at once.

    python -m bench profile [--backend distributed|embedded] [--workload throughput|seq]
                            [--seconds 20] [--calls 5000] [--rate 200] [--idle] [--top 20]
                            [--out DIR] [--prefetch 32]

Starts ``ec worker -c 2`` on the chosen backend, then this process submits CALLS no-op
calls and waits for all of them (``--workload seq``: CALLS round trips one at a time),
over and over, while ``py-spy record -f raw`` samples it
(the client) and each worker process for SECONDS. Prints, per process, its CPU use over
the window and the functions with the most samples: "self" (the frame on top of the
stack) and "total" (anywhere on the stack). Without ``--idle`` py-spy drops samples of
threads that are waiting (select, socket reads), so the figures are CPU; with it, waits
show up too. The raw stacks are kept in DIR (default: a temporary directory, printed)
for flamegraph.pl or speedscope.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from itertools import zip_longest
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PREFETCH, drop_schema, emit, machine, pg_schema, table  # noqa: E402
from bench.core import backend_urls, ec_session, sequential, throughput  # noqa: E402

FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """``fn (path/to/file.py:12)`` -> ``fn (file.py)``, site-packages and repo paths trimmed."""
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    path = re.sub(r"^\.\d+/", "", path)
    return f"{m.group('fn')} ({path})"


def summarise(raw: Path, top: int) -> dict:
    """Per thread: sample count, the top "self" functions (top of the stack) and the top
    ElasticCode functions by "total" share (anywhere on the stack), from py-spy's raw
    output recorded with ``--threads``; shares are of all the process's samples."""
    threads: dict[str, dict] = {}
    n = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        name = "?"
        if frames and frames[0].startswith("thread ("):
            name = frames.pop(0).split(": ", 1)[-1] or "?"
            if frames and " (" not in frames[0]:  # the thread's name, when it has one
                name = frames.pop(0)
        frames = [short(f) for f in frames] or ["?"]
        t = threads.setdefault(name, {"samples": 0, "self": Counter(), "total": Counter()})
        n += c
        t["samples"] += c
        t["self"][frames[-1]] += c
        for f in set(frames):
            if "(ectool/" in f or "(agentd/" in f:
                t["total"][f] += c

    def share(k: int) -> float:
        return round(100 * k / n, 1) if n else 0.0

    out = {"samples": n, "threads": {}}
    for name, t in sorted(threads.items(), key=lambda kv: -kv[1]["samples"]):
        out["threads"][name] = {"share": share(t["samples"]),
                                "self": [(f, share(c)) for f, c in t["self"].most_common(top)],
                                "ectool_total": [(f, share(c)) for f, c in t["total"].most_common(top)]}
    return out


def process_cpu() -> dict[tuple[int, str], float]:
    """CPU seconds so far of every process on the machine, by (pid, name)."""
    import psutil

    out = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:
            out[(p.pid, p.info["name"] or "?")] = t.user + t.system
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench profile", description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["distributed", "embedded"], default="distributed")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--workload", choices=["throughput", "seq"], default="throughput",
                    help="submit CALLS then collect them all, or CALLS round trips one at a time")
    ap.add_argument("--calls", type=int, default=5000, help="calls per round")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--idle", action="store_true", help="keep samples of waiting threads")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=PREFETCH)
    ap.add_argument("--out", help="keep the raw stacks here")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not installed (pip install py-spy)")
    import psutil

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="ec-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["EC_HOME"] = str(tmp / "home")
        schema = pg_schema() if args.backend == "distributed" else None
        try:
            db_url, broker_url = backend_urls(args.backend, tmp, schema)
            with ec_session(db_url, broker_url, args.workers, args.prefetch, tmp) as s:
                targets = {"client": os.getpid(), **{f"worker{i}": w.pid for i, w in enumerate(s.workers)}}
                spies = {name: subprocess.Popen(
                    [spy, "record", "-p", str(pid), "-f", "raw", "-o", str(out_dir / f"{name}.raw"),
                     "-d", str(int(args.seconds)), "-r", str(args.rate), "--threads",
                     *(["--idle"] if args.idle else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for name, pid in targets.items()}
                procs = {name: psutil.Process(pid) for name, pid in targets.items()}
                time.sleep(0.5)  # py-spy attached
                cpu0 = {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}
                others0 = process_cpu()
                sys0 = psutil.cpu_times()
                t0 = time.perf_counter()
                rounds, rates = 0, []
                stop = threading.Event()
                threading.Timer(args.seconds, stop.set).start()
                while not stop.is_set():
                    if args.workload == "seq":
                        r0 = time.perf_counter()
                        sequential(s.client, args.calls)
                        rates.append(round(args.calls / (time.perf_counter() - r0), 1))
                    else:
                        rates.append(throughput(s.client, args.calls)["throughput_calls_s"])
                    rounds += 1
                wall = time.perf_counter() - t0
                cpu = {name: round(100 * (sum(p.cpu_times()[:2]) - cpu0[name]) / wall, 1)
                       for name, p in procs.items()}
                sys1 = psutil.cpu_times()
                busy = (sum(sys1) - sys1.idle) - (sum(sys0) - sys0.idle)
                cpu["machine_busy_of_all_cpus"] = round(100 * busy / max(sum(sys1) - sum(sys0), 1e-9), 1)
                mine = set(targets.values()) | {p.pid for p in spies.values()}
                others = {}
                for (pid, pname), t1 in process_cpu().items():
                    if pid not in mine and (pid, pname) in others0:
                        others[pname] = others.get(pname, 0.0) + (t1 - others0[(pid, pname)])
                cpu |= {f"other:{k}": round(100 * v / wall, 1)
                        for k, v in sorted(others.items(), key=lambda kv: -kv[1])[:5] if v / wall > 0.02}
                for name, p in spies.items():
                    try:
                        p.wait(args.seconds + 30)
                    except subprocess.TimeoutExpired:
                        p.terminate()
                    err = p.stderr.read().decode()
                    if p.returncode:
                        print(f"py-spy {name} exited {p.returncode}: {err[-500:]}", file=sys.stderr)
        finally:
            if schema:
                drop_schema(schema)
    result = {"backend": args.backend, "workload": args.workload, "calls_per_round": args.calls, "rounds": rounds,
              "throughput_calls_s": sorted(rates)[len(rates) // 2] if rates else None,
              "cpu_percent": cpu, "raw_dir": str(out_dir), "idle": args.idle}
    print(f"ec profile: {args.workload} on {args.backend}, {args.workers} workers, prefetch {args.prefetch}, {rounds} rounds of "
          f"{args.calls} calls ({result['throughput_calls_s']} calls/s median, profiled)")
    print("CPU % of one core over the window: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    for name in targets:
        raw = out_dir / f"{name}.raw"
        if not raw.exists():
            continue
        summary = summarise(raw, args.top)
        result[name] = summary
        print(f"\n== {name} (pid {targets[name]}): {summary['samples']} samples"
              f"{' incl. idle' if args.idle else ' on CPU'}; % of this process's samples")
        for tname, t in summary["threads"].items():
            if t["share"] < 2:
                continue
            print(f"-- thread {tname}: {t['share']}%")
            rows = [[a[1] if a else None, a[0] if a else "", b[1] if b else None, b[0] if b else ""]
                    for a, b in zip_longest(t["self"], t["ectool_total"])]
            print(table(["self %", "function (top of stack)", "total %", "ectool function (anywhere on stack)"],
                        rows))
    print(f"\nraw stacks: {out_dir}")
    emit({"bench": "profile", **machine(), **result})


if __name__ == "__main__":
    main()
