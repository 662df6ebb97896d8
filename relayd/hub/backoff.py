"""Exponential backoff with full jitter for reconnecting.

Hand-written (a dozen lines) rather than stamina/tenacity: those retry a call until it
succeeds, while the hub needs a delay sequence that resets after a connection that
stayed up, in a loop that runs forever.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """``next_delay()`` is uniform in [0, min(maximum, initial * 2**n)]; `reset` sets n=0."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng or random.Random()
        self._failures = 0

    def next_delay(self) -> float:
        ceiling = min(self._maximum, self._initial * 2.0 ** min(self._failures, 62))
        self._failures += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self._failures = 0
