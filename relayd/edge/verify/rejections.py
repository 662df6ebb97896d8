"""`RejectionLog`: refused webhooks in the log, one line per sender per interval at most.

A forger, or a sender configured with a stale secret, retries in a loop; the log must show
that it happens, from whom and why, without growing with it. The first refusal from a
sender is logged; further ones from it within ``interval`` are only counted, and the count
goes with its next line once the interval has passed. Every refusal is also counted in
``relayd_ingress_rejected_total``. At most ``max_senders`` are remembered: past that, while
none of them has been quiet for an interval, refusals from new senders are counted
together and that count is logged once room is made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = ["MAX_TRACKED_SENDERS", "REJECTION_LOG_SECONDS", "RejectionLog"]

log = logging.getLogger("relayd.edge.verify")

# One line per sender per this many seconds at most.
REJECTION_LOG_SECONDS = 60.0
# Senders remembered at once (an entry is a few dozen bytes; a spoofing flood of addresses
# must not grow memory).
MAX_TRACKED_SENDERS = 4096


@dataclass
class _Window:
    start: float
    unlogged: int = 0


class RejectionLog:
    """See the module docstring. ``clock``: monotonic seconds (trio's clock by default)."""

    def __init__(self, interval: float = REJECTION_LOG_SECONDS, *,
                 max_senders: int = MAX_TRACKED_SENDERS,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._interval = interval
        self._max_senders = max_senders
        self._clock = clock
        self._senders: dict[str, _Window] = {}
        self._untracked = 0  # refusals from senders there was no room to remember

    def rejected(self, endpoint_id: str, sender: str, reason: str) -> None:
        now = self._clock()
        window = self._senders.get(sender)
        if window is not None and now - window.start < self._interval:
            window.unlogged += 1
            return
        if window is None and len(self._senders) >= self._max_senders:
            self._forget_quiet(now)
            if len(self._senders) >= self._max_senders:
                self._untracked += 1
                return
        if window is None:
            tail = f" (further ones from this sender: one line per {self._interval:g}s)"
        elif window.unlogged:
            tail = (f" (and {window.unlogged} more from this sender since "
                    f"{now - window.start:.0f}s ago)")
        else:
            tail = ""
        self._senders[sender] = _Window(now)
        log.warning("webhook rejected (401): %s endpoint=%s sender=%s%s", reason, endpoint_id,
                    sender, tail)

    def _forget_quiet(self, now: float) -> None:
        """Drop the senders whose interval has passed (logging what they left uncounted)."""
        for sender, window in list(self._senders.items()):
            if now - window.start < self._interval:
                continue
            del self._senders[sender]
            if window.unlogged:
                log.warning("webhooks rejected (401): %d more from sender=%s since %.0fs ago",
                            window.unlogged, sender, now - window.start)
        if self._untracked and len(self._senders) < self._max_senders:
            log.warning("webhooks rejected (401): %d more from senders beyond the %d "
                        "remembered", self._untracked, self._max_senders)
            self._untracked = 0
