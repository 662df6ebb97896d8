"""Group commit for the ingress: many concurrent POSTs share one SQLite transaction.

`IngestBatcher.store` hands a webhook to the batcher task and returns only after the
transaction holding it has committed, or raises `StorageUnavailable`. The batcher takes
whatever is queued (up to `MAX_BATCH`) and commits it at once, so under load the fsync
cost is paid per batch while each request still waits for its own commit. After each
commit, ``on_stored`` gets the batch, and the same webhooks as stored (with their seq, as
the dispatcher reads them; None if the store could not tell): the daemon hands them to
the dispatcher, which sends them without reading them back, and counts them.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence

import trio

from relayd.common.batching import take_batch
from relayd.edge.store import NewWebhook, Store, StoredWebhook

__all__ = ["IngestBatcher", "StorageUnavailable"]

log = logging.getLogger(__name__)

# Webhooks waiting for the next commit; a full queue makes new requests wait. (Their
# bodies' bytes are bounded by ingress.max_inflight_bytes: see relayd.edge.ingress.)
QUEUE_SIZE = 1024
# Most webhooks committed in one transaction.
MAX_BATCH = 256


class StorageUnavailable(Exception):
    """The webhook could not be committed (disk full, read-only, locked, closed)."""


class _Pending:
    __slots__ = ("done", "error", "webhook")

    def __init__(self, webhook: NewWebhook) -> None:
        self.webhook = webhook
        self.done = trio.Event()
        self.error: str | None = None


class IngestBatcher:
    """Single task that commits queued webhooks in batches."""

    def __init__(self, store: Store,
                 on_stored: Callable[[Sequence[NewWebhook], Sequence[StoredWebhook] | None],
                                     None] = lambda batch, stored: None) -> None:
        self._store = store
        self._on_stored = on_stored
        self._send, self._receive = trio.open_memory_channel[_Pending](QUEUE_SIZE)
        self.batches = 0

    async def store(self, webhook: NewWebhook) -> None:
        """Return once ``webhook`` is committed; raise `StorageUnavailable` otherwise."""
        pending = _Pending(webhook)
        try:
            await self._send.send(pending)
        except trio.ClosedResourceError:
            raise StorageUnavailable("relayd is shutting down") from None
        # If the client goes away while we wait, this is cancelled; the batch never
        # waits for its readers, so the commit still happens and nobody reads the answer.
        await pending.done.wait()
        if pending.error is not None:
            raise StorageUnavailable(pending.error)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                batch = take_batch(first, self._receive, MAX_BATCH)
                await self._commit(batch)

    def close(self) -> None:
        """Stop taking webhooks; queued ones are still committed."""
        self._send.close()

    async def _commit(self, batch: list[_Pending]) -> None:
        error: str | None = None
        webhooks = [p.webhook for p in batch]
        stored: list[StoredWebhook] | None = None
        try:
            stored = await self._store.insert_webhooks(webhooks)
        except sqlite3.Error as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("ingest commit failed for %d webhooks: %s", len(batch), error)
        self.batches += 1
        for pending in batch:
            pending.error = error
            pending.done.set()
        if error is None:
            self._on_stored(webhooks, stored)
