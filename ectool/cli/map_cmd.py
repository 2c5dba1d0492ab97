"""Streaming map: one call per stdin line, results in input order, bounded in flight."""

from __future__ import annotations

import sys
from collections import deque

from ..errors import CallTimeout, TaskFailed
from .args import stdin_value
from .env import Env


def run_lines(env: Env, socket: str, jobs: int | None, timeout: float | None, as_json: bool) -> None:
    from ..calls import Client
    from .run_cmd import report

    window = max(1, jobs or 64)
    client = Client(env.config)
    failures = 0
    pending: deque[str] = deque()
    results: dict = {}

    def drain(block_for_head: bool) -> None:
        nonlocal failures
        while pending and (pending[0] in results or block_for_head):
            head = pending[0]
            if head not in results:
                try:
                    results.update(client.wait(list(pending)[:1], timeout))
                except CallTimeout:
                    raise CallTimeout(f"timed out waiting for call {head}") from None
            out = results.pop(pending.popleft())
            try:
                report(out, as_json)
            except TaskFailed as exc:
                failures += 1
                sys.stderr.write(f"ec: {exc}\n")
            sys.stdout.flush()
            block_for_head = False

    try:
        batch: list = []
        for raw in sys.stdin.buffer:
            batch.append(stdin_value(raw))
            if len(batch) >= min(window, 256) or len(pending) + len(batch) >= window:
                pending.extend(client.submit(socket, [([v], {}) for v in batch]))
                batch = []
                while len(pending) >= window:
                    drain(True)
        if batch:
            pending.extend(client.submit(socket, [([v], {}) for v in batch]))
        while pending:
            drain(True)
    finally:
        client.close()
    if failures:
        raise TaskFailed(f"{failures} call(s) failed")
