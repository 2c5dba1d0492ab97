"""``python -m bench NAME [options]``: run one benchmark (``python -m bench`` lists them)."""

from __future__ import annotations

import importlib
import inspect
import sys

BENCHES = {
    "ceiling": ("bench.ceiling", "raw pika on RabbitMQ with ec's durability: the ceiling"),
    "floor": ("bench.floor", "ec's three store writes from raw pika + psycopg2: what the guarantees cost"),
    "celery": ("bench.celery_bench", "Celery: acks_late, prefork 2, rpc:// (and a chord on PostgreSQL)"),
    "ec": ("bench.ec", "ElasticCode: throughput, round trips, funnel, pipeline; both transports"),
    "core": ("bench.core", "ElasticCode: throughput and round trips only"),
    "client": ("bench.client", "ElasticCode's client alone: submit latency and rate, store poll, encode"),
    "phases": ("bench.phases", "where a round trip and a funnel spend their time (store timestamps)"),
    "shell": ("bench.shell", "seq N | ec map noop, ec run round trip, GNU parallel"),
    "compare": ("bench.compare", "ceiling, celery and ec alternately; medians and pairwise ratios"),
    "profile": ("bench.profile", "py-spy profiles of an ec client and worker under throughput load"),
    "faults": ("bench.faults", "fault injection with the loss checker (tests/fault_scenarios.py)"),
    "hosts": ("bench.hosts", "seq N | ec map over 3 test hosts (network namespaces) against 1, same run"),
}


def usage() -> str:
    lines = ["usage: python -m bench NAME [options]   (NAME --help for its options)", ""]
    lines += [f"  {name:<8} {about}" for name, (_, about) in BENCHES.items()]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    name = sys.argv[1]
    if name not in BENCHES:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    fn = importlib.import_module(BENCHES[name][0]).main
    if inspect.signature(fn).parameters:
        result = fn(sys.argv[2:])
    else:  # a script-style main() that reads sys.argv itself
        sys.argv = [f"bench {name}", *sys.argv[2:]]
        result = fn()
    if isinstance(result, int):
        sys.exit(result)


if __name__ == "__main__":
    main()
