"""A history of calls under faults, and the checker that judges it (Jepsen-style).

Every call is recorded as ``confirmed`` (submit returned: the system promised it),
``failed`` (submit raised a definite error) or ``unknown`` (the submit's fate is unclear).
After the faults, the checker reads the store and the side-effect files of the sample's
``mark`` function and counts:

* ``lost``: confirmed, yet no final outcome (or not ``done``) - must be 0;
* ``duplicated``: more than one recorded outcome for one call - must be 0 (the store keeps
  one row per call and only a non-final row can take an outcome; the checker also verifies
  that every recorded result is the call's own key);
* ``re-executed``: executions > 1 (allowed by at-least-once, visible as attempts);
* ``unexpected``: an outcome other than ``done`` for a call that should succeed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class History:
    marks: Path
    confirmed: dict[str, str] = field(default_factory=dict)  # call id -> key
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # why submits failed, one line each

    def submit(self, client, socket: str, keys: list[str], seconds: float = 0.0) -> None:
        """Submit one ``mark`` call per key, recording what the system promised."""
        from ectool.errors import EcError

        try:
            ids = client.submit(socket, [([str(self.marks), k, seconds], {}) for k in keys], reply=False)
        except EcError as exc:
            (self.failed if exc.exit_code != 3 else self.unknown).extend(keys)
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - anything else leaves the fate unknown
            self.unknown.extend(keys)
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.confirmed.update(zip(ids, keys, strict=True))


@dataclass
class Report:
    scenario: str
    calls: int
    confirmed: int
    lost: int
    duplicated: int
    reexecuted: int
    unexpected: int
    seconds: float

    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0

    ROW = "{:<34} {:>6} {:>9} {:>5} {:>10} {:>11} {:>10} {:>7}"

    @classmethod
    def header(cls) -> str:
        return cls.ROW.format("scenario", "calls", "confirmed", "lost", "duplicated", "re-executed",
                              "unexpected", "seconds")

    def line(self) -> str:
        return self.ROW.format(self.scenario, self.calls, self.confirmed, self.lost, self.duplicated,
                               self.reexecuted, self.unexpected, f"{self.seconds:.1f}")


def settle(history: History, timeout: float) -> None:
    """Wait until every confirmed call is final (or the timeout passes), surviving store
    outages (the connection is reopened on errors)."""
    from peewee import DatabaseError, InterfaceError

    from ectool.store.models import FINAL_CALL_STATUS, Call, db

    pending = set(history.confirmed)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        try:
            ids = list(pending)
            for i in range(0, len(ids), 500):
                done = Call.select(Call.id).where(Call.id.in_(ids[i:i + 500]) & Call.status.in_(FINAL_CALL_STATUS))
                pending -= {r.id for r in done}
        except (DatabaseError, InterfaceError):
            db.close()
        time.sleep(0.2)


def check(history: History, scenario: str, started: float) -> Report:
    from ectool.store.models import Call

    rows = {}
    ids = list(history.confirmed)
    for i in range(0, len(ids), 500):
        for r in Call.select().where(Call.id.in_(ids[i:i + 500])):
            rows[r.id] = r
    lost = dup = unexpected = reexec = 0
    import json

    for cid, key in history.confirmed.items():
        row = rows.get(cid)
        if row is None or row.status not in ("done", "failed", "dead", "cancelled"):
            lost += 1
            continue
        if row.status != "done":
            unexpected += 1
            continue
        if json.loads(row.result) != key:
            dup += 1  # an outcome that is not this call's own
        path = history.marks / key
        runs = len(path.read_text().splitlines()) if path.exists() else 0
        if runs == 0:
            lost += 1  # recorded done without ever running
        elif runs > 1:
            reexec += 1
    return Report(scenario, len(history.confirmed) + len(history.failed) + len(history.unknown),
                  len(history.confirmed), lost, dup, reexec, unexpected, time.monotonic() - started)
