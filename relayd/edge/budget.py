"""`ByteBudget`: a bound on the bytes of request bodies held in memory at once.

A request reserves bytes before it holds them (the announced Content-Length up front, or
each chunk of a chunked body as it arrives) and gives them all back when it ends, however
it ends. A reservation that does not fit is refused at once, never waited for: the
caller answers 503 and the client retries later, rather than holding a connection open
while it waits for memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["BudgetStatistics", "ByteBudget", "Reservation"]


@dataclass(frozen=True)
class BudgetStatistics:
    limit: int
    in_use: int


class Reservation:
    """The bytes one request holds; grows with `grow_to`, returned when its `hold` ends."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.size = 0

    def grow_to(self, size: int) -> bool:
        """Hold ``size`` bytes in all; False (and nothing more held) if that does not fit."""
        extra = size - self.size
        if extra <= 0:
            return True
        if not self._budget._take(extra):
            return False
        self.size = size
        return True


class ByteBudget:
    """At most ``limit`` bytes reserved at once, across all requests."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._in_use = 0

    @contextmanager
    def hold(self) -> Iterator[Reservation]:
        """A reservation (empty at first) whose bytes return to the budget when the block
        exits: normally, by an error, or by cancellation."""
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            self._in_use -= reservation.size
            reservation.size = 0

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(limit=self._limit, in_use=self._in_use)

    def _take(self, size: int) -> bool:
        if self._in_use + size > self._limit:
            return False
        self._in_use += size
        return True
