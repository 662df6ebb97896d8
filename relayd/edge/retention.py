"""Retention: final webhooks are deleted once kept long enough, so the database stops growing.

Every `ROUND_INTERVAL` (and once at start) a round deletes the webhooks that have been
``delivered`` for ``store.keep_delivered`` seconds, or ``failed`` / ``dead_letter`` for
``store.keep_failed`` (0 keeps them forever). ``pending`` webhooks are never deleted.
Deletion goes through the single writer in transactions of at most `BATCH_ROWS` rows
and `BATCH_BYTES` of bodies; between two, whoever waits for the writer (the ingest
batcher, the ack writer) goes first, since trio's `CapacityLimiter` hands itself over in
arrival order. So a round after a long time without retention (months of rows) never
holds ingest for longer than one batch. Then the freed pages go back to the file
system (all but `SPARE_FRACTION` of the file), `RECLAIM_PAGES` per transaction, when
the database allows it (``auto_vacuum=INCREMENTAL``: databases created by this relayd;
see `relayd.edge.store.retention`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio
from trio_util import AsyncValue

from relayd.edge.config import StoreConfig
from relayd.edge.store import Store
from relayd.edge.store.records import DEAD_LETTER, DELIVERED, FAILED

__all__ = ["BATCH_BYTES", "BATCH_ROWS", "RECLAIM_PAGES", "ROUND_INTERVAL", "SPARE_FRACTION",
           "Retention", "RoundReport"]

log = logging.getLogger(__name__)

# Seconds between rounds. Short next to the keep times (days): each round is small.
ROUND_INTERVAL = 60.0
# Rows deleted per transaction: how long the writer is held (a few ms) between two turns
# of the ingest batcher or the ack writer...
BATCH_ROWS = 500
# ...and their bodies' bytes: deleting a body reads its pages (~5 ms per MiB measured on
# a cold cache), so 500 bodies of 4 MiB would hold the writer for seconds.
BATCH_BYTES = 16 * 1024 * 1024
# Free pages handed back per transaction (4 MiB with the default 4 KiB pages)...
RECLAIM_PAGES = 1024
# ...beyond this fraction of the file, kept for the next rows: with steady traffic each
# round frees a small part of the file (1/10080 with 7 days kept and a round a minute),
# which new rows reuse in place instead of SQLite moving pages around at every round.
SPARE_FRACTION = 0.1


@dataclass(frozen=True)
class RoundReport:
    """What one round did."""

    at: float  # the Unix time the ages were measured against
    batches: tuple[Mapping[str, int], ...]  # rows deleted per transaction, per status
    reclaimed_bytes: int  # handed back to the file system

    @property
    def deleted(self) -> dict[str, int]:
        """Rows deleted per final status (every final status, 0 included)."""
        total = dict.fromkeys((DELIVERED, FAILED, DEAD_LETTER), 0)
        for batch in self.batches:
            for status, count in batch.items():
                total[status] += count
        return total


class Retention:
    """Deletes expired final webhooks. ``await nursery.start(retention.run)``."""

    def __init__(self, store: Store, *, keep_delivered: float = StoreConfig.keep_delivered,
                 keep_failed: float = StoreConfig.keep_failed,
                 interval: float = ROUND_INTERVAL, batch_rows: int = BATCH_ROWS,
                 batch_bytes: int = BATCH_BYTES, clock: Callable[[], float] = time.time) -> None:
        """``keep_*``: seconds, 0 = forever. ``clock``: the Unix time (the database's
        times are Unix seconds, so not trio's clock)."""
        self._store = store
        self._keep = {DELIVERED: keep_delivered, FAILED: keep_failed, DEAD_LETTER: keep_failed}
        self._interval = interval
        self._batch_rows = batch_rows
        self._batch_bytes = batch_bytes
        self._clock = clock
        # rounds done so far (`wait_rounds`)
        self.rounds = AsyncValue(0)
        self.last_report: RoundReport | None = None

    @property
    def enabled(self) -> bool:
        return any(keep > 0 for keep in self._keep.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """A round now, then one every ``interval``; returns at once when all keep times
        are 0. A round that fails on a database error (a lock held by another process, a
        full disk) is logged and the next one tries again."""
        if not self.enabled:
            log.info("retention off: store.keep_delivered and store.keep_failed are 0")
            task_status.started()
            return
        try:
            space = await self._store.space()
        except sqlite3.Error:
            space = None  # only for the note below; the rounds say what fails
        if space is not None and not space.incremental:
            log.info("retention: this database was created without auto_vacuum=incremental: "
                     "the space of deleted webhooks is reused, but the file (%d bytes) does "
                     "not shrink; to shrink it, stop relayd and run VACUUM once (README)",
                     space.size_bytes)
        task_status.started()
        failures = 0
        while True:
            try:
                await self.run_round()
            except sqlite3.Error as exc:
                # Nothing waits on retention: the next round tries again. Logged once per
                # episode, like the dispatcher's storage errors.
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "retention: a round failed (%d in a row), next one in %gs: "
                        "%s: %s", failures, self._interval, type(exc).__name__, exc)
            else:
                if failures:
                    log.info("retention works again after %d failed rounds", failures)
                failures = 0
            await trio.sleep(self._interval)

    async def run_round(self) -> RoundReport:
        """Delete what has expired by now, in batches; hand the space back; log it."""
        now = self._clock()
        cutoffs = {status: now - keep for status, keep in self._keep.items() if keep > 0}
        batches: list[Mapping[str, int]] = []
        while cutoffs:
            # The writer is released after each batch: waiting writes go in between.
            batch = await self._store.delete_expired(cutoffs, self._batch_rows,
                                                     self._batch_bytes)
            if not any(batch.values()):
                break
            batches.append(batch)
        reclaimed = 0
        while batches:
            freed = await self._store.reclaim_space(RECLAIM_PAGES, SPARE_FRACTION)
            if not freed:
                break
            reclaimed += freed
        report = RoundReport(now, tuple(batches), reclaimed)
        if batches:
            deleted = report.deleted
            log.info("retention deleted delivered=%d failed=%d dead_letter=%d "
                     "transactions=%d reclaimed_bytes=%d", deleted[DELIVERED], deleted[FAILED],
                     deleted[DEAD_LETTER], len(batches), reclaimed)
        self.last_report = report
        self.rounds.value += 1
        return report

    async def wait_rounds(self, count: int) -> RoundReport:
        """Wait until ``count`` rounds are done in all; return the last one's report."""
        await self.rounds.wait_value(lambda done: done >= count)
        assert self.last_report is not None
        return self.last_report
