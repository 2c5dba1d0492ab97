"""Retry policy: exponential backoff with half jitter (pure, table-tested)."""

from __future__ import annotations

import random

MAX_DELAY = 300.0


def backoff_delay(attempt: int, base: float, *, cap: float = MAX_DELAY, rand: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1 = first retry): uniform in [d/2, d],
    d = min(cap, base * 2**(attempt-1)). Half-jitter keeps a floor so retries never storm."""
    if attempt < 1 or base <= 0:
        return 0.0
    d = min(cap, base * (2 ** (attempt - 1)))
    r = (rand or random).random()
    return d / 2 + r * d / 2


def should_retry(attempt: int, retries: int) -> bool:
    """After failed ``attempt`` (1-based), is another allowed by a policy of ``retries``?"""
    return attempt <= retries
