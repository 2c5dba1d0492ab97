"""ceiling, floor, celery and ec side by side: alternate runs, medians, ratios pair by pair.

    python -m bench compare [--rounds 3] [--calls 10000] [--seq 1000] [--loop 2000] [--chords 20]
                            [--funnels N] [--pipelines N] [--members 100] [--prefetch 32] [--quick]

Each round runs ``bench ceiling``, ``bench floor``, ``bench celery`` and ``bench ec``
(RabbitMQ+PostgreSQL and embedded) as subprocesses, in an order rotated from round to
round so that drift in a noisy machine falls on each of them alike, and keeps the JSON
line each prints. A ratio (ec / celery, ec / ceiling, ec / floor) is computed within each
round, from figures measured minutes apart, and the median of those is reported next to
the median of each figure. "ec" in the ratios is ElasticCode on RabbitMQ + PostgreSQL (the
same broker as the others). ``floor / celery`` says whether a target relative to Celery
can be met at all with ec's guarantees: the floor is those guarantees with no runtime
around them. ``--quick`` shrinks every workload (a smoke run). ``--funnels`` and
``--pipelines`` (default: ``--chords``) size the funnel/chord and pipeline/chain workloads
apart, 0 skipping one; ``--calls 0`` skips the throughput workload (and the floor, which
needs it). Prints tables and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PREFETCH, ROOT, emit, fmt, machine, median, table  # noqa: E402

#: (label, getter, unit, better) for the figures table
FIGURES = [
    ("throughput calls/s", "throughput_calls_s", "higher"),
    ("sequential p50 ms", "seq_p50_ms", "lower"),
    ("sequential p99 ms", "seq_p99_ms", "lower"),
    ("loop add(i,1) calls/s", "loop_calls_s", "higher"),
    ("chord/funnel 100+sum p50 ms", "chord_p50_ms", "lower"),
    ("chain/pipeline 10 p50 ms", "chain_p50_ms", "lower"),
]

#: ratio name -> (numerator system, denominator system, figure, target, target holds when)
RATIOS = {
    "throughput ec/celery": ("ec", "celery", "throughput_calls_s", 3.5, "ge"),
    "throughput ec/celery+confirms": ("ec", "celery+confirms", "throughput_calls_s", None, "ge"),
    "throughput ec/ceiling": ("ec", "ceiling", "throughput_calls_s", 0.5, "ge"),
    "seq p50 ec/celery": ("ec", "celery", "seq_p50_ms", 0.5, "le"),
    "seq p50 ec/celery+confirms": ("ec", "celery+confirms", "seq_p50_ms", 1.0, "le"),
    "seq p50 ec/ceiling": ("ec", "ceiling", "seq_p50_ms", None, "le"),
    "throughput ec/floor": ("ec", "floor", "throughput_calls_s", None, "ge"),
    "seq p50 ec/floor": ("ec", "floor", "seq_p50_ms", None, "le"),
    "seq p50 floor/celery": ("floor", "celery", "seq_p50_ms", None, "le"),
    "loop ec/celery": ("ec", "celery", "loop_calls_s", 3.5, "ge"),
    "loop embedded/celery": ("ec embedded", "celery", "loop_calls_s", None, "ge"),
    "funnel/chord ec/celery": ("ec", "celery", "chord_p50_ms", 0.125, "le"),
    "pipeline10 ec/chain10": ("ec", "celery", "chain_p50_ms", 0.5, "le"),
    "throughput embedded/celery": ("ec embedded", "celery", "throughput_calls_s", None, "ge"),
}


def run(name: str, args: list[str], log) -> dict:
    """``python -m bench NAME ARGS``; its last stdout line parsed as JSON."""
    t = time.perf_counter()
    print(f"[compare] {name} {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "bench", name, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200)
    log.write(f"==== {name} {' '.join(args)} (exit {done.returncode})\n{done.stdout}\n{done.stderr}\n")
    log.flush()
    if done.returncode != 0:
        raise RuntimeError(f"bench {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"[compare] {name} done in {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
    return out


def normalise(name: str, raw: dict) -> dict[str, dict]:
    """One bench's JSON -> {system: {figure: value}} with common figure names."""
    if name == "ceiling":
        r = raw["raw"]
        return {"ceiling": {"throughput_calls_s": r["calls_per_s"], "seq_p50_ms": r["p50_ms"],
                            "seq_p99_ms": r["p99_ms"]}}
    if name == "floor":
        return {"floor": {k: raw.get(k) for k in ("throughput_calls_s", "seq_p50_ms", "seq_p99_ms")}}
    if name == "celery":
        out = {"celery": dict(raw.get("default", {})), "celery+confirms": dict(raw.get("confirms", {}))}
        out["celery"] |= {"chord_p50_ms": raw.get("chord_p50_ms"), "chain_p50_ms": raw.get("chain_p50_ms")}
        return out
    out = {}
    for backend, system in (("distributed", "ec"), ("embedded", "ec embedded")):
        r = raw.get(backend, {})
        out[system] = {**r, "chord_p50_ms": r.get("funnel_p50_ms"), "chain_p50_ms": r.get("pipeline_p50_ms"),
                       "chord_stored_p50_ms": r.get("funnel_stored_p50_ms"),
                       "chain_stored_p50_ms": r.get("pipeline_stored_p50_ms")}
    return out


def ratio(round_: dict, num: str, den: str, key: str) -> float | None:
    a, b = round_.get(num, {}).get(key), round_.get(den, {}).get(key)
    return round(a / b, 3) if a is not None and b else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench compare", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--seq", type=int, default=1000)
    ap.add_argument("--loop", type=int, default=2000)
    ap.add_argument("--chords", type=int, default=20)
    ap.add_argument("--funnels", type=int, default=None, help="funnels and chords (default: --chords)")
    ap.add_argument("--pipelines", type=int, default=None, help="pipelines and chains of 10 (default: --chords)")
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--prefetch", type=int, default=PREFETCH)
    ap.add_argument("--quick", action="store_true", help="tiny workloads: a smoke run")
    ap.add_argument("--log", default=None, help="append every bench's full output here")
    args = ap.parse_args(argv)
    if args.quick:
        args.calls, args.seq, args.chords, args.members, args.loop = 300, 30, 2, 10, 100
    funnels = str(args.chords if args.funnels is None else args.funnels)
    pipelines = str(args.chords if args.pipelines is None else args.pipelines)
    common = ["--calls", str(args.calls), "--seq", str(args.seq)]
    argsets = {
        "ceiling": ["-n", str(args.calls), "--seq", str(args.seq)],
        "floor": [*common, "--prefetch", str(args.prefetch)],
        "celery": [*common, "--loop", str(args.loop), "--chords", funnels, "--chains", pipelines,
                   "--members", str(args.members)],
        "ec": [*common, "--loop", str(args.loop), "--funnels", funnels, "--pipelines", pipelines,
               "--members", str(args.members), "--prefetch", str(args.prefetch)],
    }
    if not args.calls:
        del argsets["floor"]  # it measures throughput first: nothing to measure
    order = list(argsets)
    rounds: list[dict] = []
    started = time.perf_counter()
    log_path = Path(args.log) if args.log else None
    with (open(log_path, "a") if log_path else open(os.devnull, "w")) as log:
        for i in range(args.rounds):
            this = order[i % len(order):] + order[:i % len(order)]
            r: dict = {"order": this}
            for name in this:
                try:
                    r |= normalise(name, run(name, argsets[name], log))
                except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
                    # keep the other rounds; this round's ratios with NAME are left out
                    print(f"[compare] round {i + 1}: {name} failed: {str(exc)[-1500:]}", file=sys.stderr)
                    r.setdefault("failed", {})[name] = str(exc)[-500:]
            rounds.append(r)
    elapsed = time.perf_counter() - started

    systems = ["ceiling", "floor", "celery", "celery+confirms", "ec", "ec embedded"]
    medians = {s: {key: median([r.get(s, {}).get(key) for r in rounds]) for _, key, _ in FIGURES}
               for s in systems}
    for s in ("ec", "ec embedded"):
        for key in ("chord_stored_p50_ms", "chain_stored_p50_ms"):
            medians[s][key] = median([r.get(s, {}).get(key) for r in rounds])
    ratios = {}
    for name, (num, den, key, target, how) in RATIOS.items():
        per = [ratio(r, num, den, key) for r in rounds]
        med = median(per)
        held = None if target is None or med is None else (med >= target if how == "ge" else med <= target)
        ratios[name] = {"per_round": per, "median": med, "target": target,
                        "target_is": ">=" if how == "ge" else "<=", "met": held}

    print(f"bench compare: {args.rounds} rounds (order rotated), {args.calls} calls, {args.seq} sequential, "
          f"{args.chords} chords of {args.members}; ec prefetch {args.prefetch}; {os.cpu_count()} CPUs; "
          f"{elapsed:.0f} s")
    print("medians:")
    print(table(["figure", *systems],
                [[label, *(medians[s].get(key) for s in systems)] for label, key, _ in FIGURES]
                + [["  ec funnel, store-recorded", None, None, None, None, medians["ec"]["chord_stored_p50_ms"],
                    medians["ec embedded"]["chord_stored_p50_ms"]],
                   ["  ec pipeline, store-recorded", None, None, None, None, medians["ec"]["chain_stored_p50_ms"],
                    medians["ec embedded"]["chain_stored_p50_ms"]]]))
    print("ratios (computed within each round; 'ec' = ElasticCode on RabbitMQ + PostgreSQL):")
    print(table(["ratio", "per round", "median", "target", "met"],
                [[name, " ".join(fmt(v) for v in r["per_round"]), r["median"],
                  None if r["target"] is None else f"{r['target_is']} {r['target']}",
                  None if r["met"] is None else ("yes" if r["met"] else "no")]
                 for name, r in ratios.items()]))
    failed = [(i + 1, name) for i, r in enumerate(rounds) for name in r.get("failed", {})]
    if failed:
        print("FAILED runs (left out of the medians and ratios): "
              + ", ".join(f"round {i} {name}" for i, name in failed))
    emit({"bench": "compare", "rounds": args.rounds, "failed": failed, "calls": args.calls, "seq": args.seq,
          "loop": args.loop, "chords": args.chords, "members": args.members, "prefetch": args.prefetch,
          "elapsed_s": round(elapsed), **machine(), "medians": medians, "ratios": ratios,
          "per_round": rounds})
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
