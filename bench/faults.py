"""Run every fault-injection scenario and print the checker's table.

    python bench/faults.py [--only NAME] [--kind sqlite|amqp]

Same scenarios as ``pytest -m faults`` (tests/fault_scenarios.py); needs RabbitMQ for the
amqp rows (the RabbitMQ restart scenario runs ``rabbitmqctl stop_app/start_app``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fault_scenarios import SCENARIOS, cleanup, setup  # noqa: E402
from history import Report  # noqa: E402

AMQP = os.environ.get("EC_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(SCENARIOS))
    ap.add_argument("--kind", choices=["sqlite", "amqp"])
    args = ap.parse_args()
    reports = []
    print(Report.header(), flush=True)
    with tempfile.TemporaryDirectory() as d:
        os.environ["EC_HOME"] = str(Path(d) / "home")
        for name, (fn, kinds) in SCENARIOS.items():
            if args.only and name != args.only:
                continue
            for kind in kinds:
                if args.kind and kind != args.kind:
                    continue
                tmp = Path(d) / f"{name}-{kind}"
                broker = f"sqlite:///{tmp / 'queue.db'}" if kind == "sqlite" else AMQP
                ctx = setup(tmp, broker)
                try:
                    report = fn(ctx)
                finally:
                    from ectool.store import close_store

                    cleanup(ctx)
                    close_store()
                reports.append(report)
                print(report.line(), flush=True)
    print(json.dumps({"bench": "faults", "ok": all(r.ok() for r in reports),
                      "rows": [r.__dict__ for r in reports]}))
    return 0 if all(r.ok() for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
