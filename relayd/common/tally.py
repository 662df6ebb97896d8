"""Per-endpoint event counts, and the periodic log line that stands in for per-event ones.

A daemon that logged each webhook it received or delivered would write most of its log
(and spend a share of its CPU) on the normal case. Those lines are DEBUG; at INFO a
`Tally` logs one summary line per endpoint every `SUMMARY_SECONDS`, only for endpoints
where something happened, plus the remainder when it stops.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import trio

__all__ = ["SUMMARY_SECONDS", "Tally"]

# How often the summary is logged (only when something happened).
SUMMARY_SECONDS = 60.0


class Tally:
    """Counts of ``fields`` (event names) per endpoint, since the process started."""

    def __init__(self, fields: Sequence[str], logger: logging.Logger) -> None:
        self.fields = tuple(fields)
        self._log = logger
        self._totals: dict[str, dict[str, int]] = {}
        self._logged: dict[str, dict[str, int]] = {}  # the totals the last summary saw
        self._since: float | None = None  # when the last summary was taken (trio clock)

    def add(self, endpoint: str, field: str, n: int = 1) -> None:
        counts = self._totals.get(endpoint)
        if counts is None:
            counts = self._totals[endpoint] = dict.fromkeys(self.fields, 0)
        counts[field] += n

    def totals(self) -> Mapping[str, Mapping[str, int]]:
        """Endpoint -> field -> count since the start (a live view: do not keep it)."""
        return self._totals

    async def run(self, interval: float = SUMMARY_SECONDS, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Log a summary every ``interval`` seconds, and what is left when cancelled."""
        self._since = trio.current_time()
        task_status.started()
        try:
            while True:
                await trio.sleep_until(self._since + interval)
                self.log_summary()
        finally:
            self.log_summary()

    def log_summary(self) -> None:
        """Log, per endpoint, what was counted since the last summary (if anything)."""
        now = trio.current_time()
        elapsed = now - (self._since if self._since is not None else now)
        self._since = now
        for endpoint, counts in self._totals.items():
            before = self._logged.get(endpoint)
            changes = {f: n - (before[f] if before else 0) for f, n in counts.items()}
            if any(changes.values()):
                self._log.info("summary of the last %.0fs endpoint=%s %s", elapsed, endpoint,
                               " ".join(f"{f}={n}" for f, n in changes.items()))
                self._logged[endpoint] = dict(counts)
