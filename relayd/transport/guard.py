"""Per-peer limits and log hygiene for the public gRPC port.

`PeerGuard` keeps, per peer host, the open connections and the failures (bad
authentication, protocol errors, connections that never authenticate) of the current
interval. It refuses a new connection when the listener is full, when the peer already
has its share, or when the peer failed too often this interval. Each kind of trouble from
a peer is logged once per interval, then counted and summarised when the interval ends,
so a flood of garbage produces a few log lines, not one per attempt.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import trio

__all__ = ["PeerGuard"]

log = logging.getLogger(__name__)

# Length of an accounting interval (failures per peer are counted per interval).
INTERVAL_SECONDS = 10.0


@dataclass
class _Window:
    failures: int = 0
    refused: int = 0
    last_failure: str = ""
    logged: set[str] = field(default_factory=set)


class PeerGuard:
    """Admission control and rate-limited failure logging per peer host."""

    def __init__(self, *, max_connections: int, max_per_peer: int,
                 failures_per_interval: int,
                 interval: float = INTERVAL_SECONDS) -> None:
        self._max_connections = max_connections
        self._max_per_peer = max_per_peer
        self._failure_limit = failures_per_interval
        self._interval = interval
        self._open: Counter[str] = Counter()
        self._windows: dict[str, _Window] = {}

    @property
    def open_connections(self) -> int:
        return sum(self._open.values())

    def admit(self, host: str) -> bool:
        """Count a new connection from ``host`` if it may be served; False to refuse it."""
        window = self._windows.get(host)
        if window is not None and window.failures >= self._failure_limit:
            reason = f"more than {self._failure_limit} failures in {self._interval:g}s"
        elif self._open[host] >= self._max_per_peer:
            reason = f"{self._max_per_peer} connections from this peer already open"
        elif self.open_connections >= self._max_connections:
            reason = f"listener full ({self._max_connections} connections)"
        else:
            self._open[host] += 1
            return True
        window = self._windows.setdefault(host, _Window())
        window.refused += 1
        self._log_once(host, window, "refused", "grpc connection refused peer=%s reason=%s",
                       host, reason)
        return False

    def closed(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]

    def failure(self, host: str, kind: str, message: str, *args: object) -> None:
        """Record a failure of ``kind`` from ``host``; logged the first time this interval."""
        window = self._windows.setdefault(host, _Window())
        window.failures += 1
        window.last_failure = kind
        self._log_once(host, window, kind, message, *args)

    def _log_once(self, host: str, window: _Window, kind: str, message: str,
                  *args: object) -> None:
        if kind not in window.logged:
            window.logged.add(kind)
            log.warning(message + " (further ones from this peer are summarised every %gs)",
                        *args, self._interval)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Every interval: log a summary line per troublesome peer, start a new interval."""
        task_status.started()
        while True:
            await trio.sleep(self._interval)
            self._end_interval()

    def _end_interval(self) -> None:
        for host, window in self._windows.items():
            if window.failures > 1 or window.refused > 1:
                log.warning("grpc peer summary peer=%s failures=%d refused=%d last_failure=%s "
                            "in the last %gs", host, window.failures, window.refused,
                            window.last_failure or "-", self._interval)
        self._windows.clear()
