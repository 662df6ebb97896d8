"""The ack writer: one task that applies hub acks to the database in batches.

Connections put `AckRecord`s into a bounded channel (`sink`); the writer takes all that
is queued, lets more come for `ACK_LINGER_SECONDS` (up to `MAX_BATCH`), applies them in one
transaction, logs each outcome once and tells the dispatcher, which frees the in-flight
slots. The linger is what keeps live traffic cheap: webhooks arriving one at a time get
their acks one at a time, and a transaction (a thread hop) each would cost more than the
rest of the ack's path. Nothing waits for it: a success frees its slot on arrival
(`relayd.edge.connection`), and a failure's retry is due seconds later anyway.

A delivery is logged at DEBUG only (the periodic summary counts them at INFO,
`relayd.edge.activity`); every failed attempt, dead letter and ignored ack is logged at
INFO or above. If the database refuses the write, the batch is retried (nothing is acked
in memory before it is on disk); meanwhile the channel fills and the hub is slowed down
by backpressure rather than losing acks.

The retries only end when the writer is cancelled (the daemon's stop deadline): the acks
not written then are counted in one log line; their webhooks stay pending in the database
and are sent to the hub again later (a lost ack costs a redelivery, never a webhook).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence

import trio

from relayd.common.batching import take_batch
from relayd.edge.store import AckOutcome, AckRecord, Store

__all__ = ["AckWriter"]

log = logging.getLogger(__name__)

# Acks waiting to be written; when full, the connection's receiver waits.
ACK_BUFFER = 1024
# Most acks applied in one transaction.
MAX_BATCH = 512
# How long the first ack of a batch waits for more before they are written.
ACK_LINGER_SECONDS = 0.05
# Pause before retrying a batch the database refused.
RETRY_SECONDS = 1.0


class AckWriter:
    """Batches acks into transactions; see the module docstring."""

    def __init__(
        self,
        store: Store,
        on_applied: Callable[[Sequence[AckOutcome]], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._on_applied = on_applied
        self._clock = clock
        self.sink, self._receive = trio.open_memory_channel[AckRecord](ACK_BUFFER)
        self.batches = 0
        self.applied = 0
        self._writing = 0  # acks in the batch being written (retried while refused)

    def close(self) -> None:
        """No more acks will come; `run` returns once the queued ones are written."""
        self.sink.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            try:
                async for first in self._receive:
                    batch = take_batch(first, self._receive, MAX_BATCH)
                    self._writing = len(batch)
                    with trio.move_on_after(ACK_LINGER_SECONDS):
                        while len(batch) < MAX_BATCH:
                            try:
                                batch.append(await self._receive.receive())
                            except trio.EndOfChannel:  # closing: write what came
                                break
                            self._writing = len(batch)
                    now = self._clock()
                    outcomes = await self._apply(batch, now)
                    self._writing = 0
                    self.batches += 1
                    self.applied += len(batch)
                    _log_outcomes(outcomes, now)
                    self._on_applied(outcomes)
            finally:
                # Counted before the channel closes: closing the last receiver drops its buffer.
                dropped = self._writing + self._receive.statistics().current_buffer_used
                if dropped:
                    log.warning("ack writer stopped with %d acks not written to the database; "
                                "their webhooks stay pending and will be sent to the hub again",
                                dropped)

    async def _apply(self, batch: list[AckRecord], now: float) -> list[AckOutcome]:
        while True:
            try:
                return await self._store.apply_acks(batch, now)
            except sqlite3.Error as exc:
                log.error("writing %d acks failed, retrying in %.0fs: %s: %s", len(batch),
                          RETRY_SECONDS, type(exc).__name__, exc)
                await trio.sleep(RETRY_SECONDS)


def _log_outcomes(outcomes: Sequence[AckOutcome], now: float) -> None:
    # Deliveries are most of a batch: at INFO they are passed over without a call each.
    debug = log.isEnabledFor(logging.DEBUG)
    for outcome in outcomes:
        if outcome.outcome == "delivered" and not debug:
            continue
        _log_outcome(outcome, now)


def _log_outcome(outcome: AckOutcome, now: float) -> None:
    wid, ep = outcome.webhook_id, outcome.endpoint_id
    match outcome.outcome:
        case "delivered":
            log.debug("webhook delivered webhook_id=%s endpoint=%s", wid, ep)
        case "failed":
            log.warning("webhook failed permanently webhook_id=%s endpoint=%s error=%r",
                        wid, ep, outcome.detail)
        case "dead_letter":
            log.warning("webhook dead-lettered after a failure past the maximum age "
                        "webhook_id=%s endpoint=%s error=%r", wid, ep, outcome.detail)
        case "retry":
            log.info("webhook delivery failed, will retry webhook_id=%s endpoint=%s in=%.1fs "
                     "error=%r", wid, ep, outcome.next_attempt_at - now, outcome.detail)
        case "skipped":
            log.debug("webhook skipped by the hub after an earlier failure webhook_id=%s "
                      "endpoint=%s", wid, ep)
        case _:
            log.info("ack ignored webhook_id=%.64r reason=%s", wid, outcome.detail)
