"""Whether the store may take another webhook: pending per endpoint, free disk, database size.

A flood from anyone who knows an endpoint's URL must not fill the disk until relayd can
no longer record acks. So new webhooks are refused (503 with ``Retry-After``: providers
retry later) while

- the endpoint has ``max_pending`` webhooks pending (stored and not final yet), or
- the file system of the database has less than ``store.min_free_bytes`` free, or
- the database's pages in use (its file less the free pages new rows reuse; the WAL is
  not counted) pass ``store.max_bytes``.

Only new webhooks: acks, retries, status and retention keep working, in the space the
floor leaves them. The checks cost no query per request: the pending counts are the
store's in memory (`Store.pending_count`), and the disk is sampled every `SAMPLE_SECONDS`
by `run` (statvfs of the database's folder, the page counts), off the event loop. So the
bounds are soft by what arrives between two samples, and by the requests already past
the check (the connection limit bounds those).

Each bound logs once when it starts refusing and once when it takes webhooks again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from trio_util import AsyncValue

from relayd.edge.config import Endpoint, StoreConfig
from relayd.edge.store import Store

__all__ = ["SAMPLE_SECONDS", "Capacity", "CapacityStatistics", "Refusal", "free_bytes"]

log = logging.getLogger(__name__)

# Seconds between two samples of the disk: how far a flood can overshoot the floor.
SAMPLE_SECONDS = 1.0
# What a refusal asks the provider to wait: space comes back by delivery and retention,
# in minutes rather than seconds.
RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class Refusal:
    """Why a new webhook is refused: ``error`` for the sender (nothing internal)."""

    error: str
    retry_after: int = RETRY_AFTER_SECONDS


@dataclass(frozen=True)
class CapacityStatistics:
    free_bytes: int | None  # on the database's file system at the last sample (None: none)
    min_free_bytes: int
    used_bytes: int | None  # the database's pages in use at the last sample
    max_bytes: int | None
    full: bool  # whether new webhooks are refused for disk or size


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on ``folder``'s file system."""
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


class Capacity:
    """The bounds of the module docstring; ``await nursery.start(capacity.run)``."""

    def __init__(self, store: Store, endpoints: Sequence[Endpoint], *,
                 min_free_bytes: int = StoreConfig.min_free_bytes,
                 max_bytes: int | None = StoreConfig.max_bytes,
                 interval: float = SAMPLE_SECONDS) -> None:
        """``min_free_bytes`` 0 and ``max_bytes`` None: no such bound."""
        self._store = store
        self._max_pending = {ep.id: ep.max_pending for ep in endpoints}
        self._min_free = min_free_bytes
        self._max_bytes = max_bytes
        self._interval = interval
        self._free: int | None = None
        self._used: int | None = None
        self._full: str | None = None  # why the disk bound refuses, for the log
        self._over_pending: set[str] = set()
        self._sample_failures = 0
        self.samples = AsyncValue(0)  # samples taken so far (tests wait on it)

    def update_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Bound pending webhooks by ``endpoints``' max_pending from now on (config reload)."""
        self._max_pending = {ep.id: ep.max_pending for ep in endpoints}
        self._over_pending &= set(self._max_pending)

    def refusal(self, endpoint_id: str) -> Refusal | None:
        """Why a new webhook for ``endpoint_id`` must be refused now, or None to take it."""
        if self._full is not None:
            return Refusal("relay storage is full, retry later")
        limit = self._max_pending.get(endpoint_id)
        if limit is None:
            return None
        pending = self._store.pending_count(endpoint_id)
        if pending >= limit:
            if endpoint_id not in self._over_pending:
                self._over_pending.add(endpoint_id)
                log.warning("endpoint at max_pending: new webhooks are refused (503) until "
                            "deliveries bring it down endpoint=%s pending=%d max_pending=%d",
                            endpoint_id, pending, limit)
            return Refusal("too many webhooks pending for this endpoint, retry later")
        if endpoint_id in self._over_pending:
            self._over_pending.discard(endpoint_id)
            log.info("endpoint below max_pending again: taking webhooks endpoint=%s "
                     "pending=%d max_pending=%d", endpoint_id, pending, limit)
        return None

    def statistics(self) -> CapacityStatistics:
        return CapacityStatistics(free_bytes=self._free, min_free_bytes=self._min_free,
                                  used_bytes=self._used, max_bytes=self._max_bytes,
                                  full=self._full is not None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Sample now (ready then: the bounds hold from the first request), then every
        ``interval``. A failed sample is logged once per episode; the last one stands."""
        if not self._min_free and self._max_bytes is None:
            log.info("store bounds off: store.min_free_bytes = 0 and no store.max_bytes")
            task_status.started()
            return
        await self.sample()
        task_status.started()
        while True:
            await trio.sleep(self._interval)
            await self.sample()

    async def sample(self) -> None:
        """Measure the free space and the database's size; refuse or take webhooks."""
        try:
            if self._min_free:
                self._free = await trio.to_thread.run_sync(free_bytes, self._store.path.parent)
            if self._max_bytes is not None:
                space = await self._store.space()
                self._used = (space.page_count - space.freelist_count) * space.page_size
        except (OSError, sqlite3.Error) as exc:
            self._sample_failures += 1
            if self._sample_failures == 1:
                log.warning("store bounds: measuring the disk failed, keeping the last "
                            "measure until it works again: %s: %s", type(exc).__name__, exc)
            return
        if self._sample_failures:
            log.info("store bounds: measuring the disk works again after %d failures",
                     self._sample_failures)
            self._sample_failures = 0
        self._judge()
        self.samples.value += 1

    def _judge(self) -> None:
        full = None
        if self._min_free and self._free is not None and self._free < self._min_free:
            full = (f"free space {self._free} bytes on {self._store.path.parent} is under "
                    f"store.min_free_bytes = {self._min_free}")
        elif self._max_bytes is not None and self._used is not None \
                and self._used > self._max_bytes:
            full = (f"the database holds {self._used} bytes, over "
                    f"store.max_bytes = {self._max_bytes}")
        if full is not None and self._full is None:
            log.warning("store full: new webhooks are refused (503) until space is freed; "
                        "acks and retries go on: %s", full)
        elif full is None and self._full is not None:
            log.info("store has room again: taking webhooks (free_bytes=%s used_bytes=%s)",
                     self._free, self._used)
        self._full = full
