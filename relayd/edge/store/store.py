"""`Store`: the one interface to the webhook database, every call off the event loop.

Every method is ``async`` and runs its SQL on a worker thread (`trio.to_thread.run_sync`).
All writes go through one write connection guarded by a `trio.CapacityLimiter` of 1 (the
single writer); the callers batch (the ingest batcher and the ack writer each hand over
many rows per transaction). Reads use their own connections, which WAL lets run beside
the writer. The SQL itself lives in `schema`, `acks`, `queries` and `retention`; this class only
owns the connections, the locks and the thread hops, so another engine can stand in for
it behind the same methods.

In flight is not a database state: a webhook stays ``pending`` until its ack lands, and
the dispatcher keeps what it sent in memory. After a crash nothing is stuck "in flight".

Pending webhooks per endpoint (`pending_count`) are counted when the store opens and then
kept in memory by the writes that change them, so the ingress can check an endpoint's
bound (`relayd.edge.capacity`) per request without a query. Exact as long as every write
goes through this class (the single writer).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import sqlite_utils
import trio

from relayd.edge.config import RelayConfig, StoreConfig
from relayd.edge.envelopes import envelope_head
from relayd.edge.store import acks, queries, requeue, retention, schema
from relayd.edge.store.records import (
    PENDING,
    AckOutcome,
    AckRecord,
    EndpointState,
    NewWebhook,
    Requeued,
    RetryPolicy,
    StoredWebhook,
    WebhookDetail,
    WebhookInfo,
)

__all__ = ["Store", "retry_policy"]

# Ack outcomes that take a webhook out of ``pending``.
FINAL_OUTCOMES = frozenset({"delivered", "failed", "dead_letter"})


# The columns of a new webhook's row (the keys of `_row`), in the INSERT's order.
WEBHOOK_COLUMNS = ("id", "endpoint_id", "method", "headers", "body", "received_at", "status",
                   "attempts", "next_attempt_at", "updated_at", "envelope_head", "path",
                   "query", "remote_addr", "replay_of")
INSERT_WEBHOOK = (f"INSERT INTO webhooks ({', '.join(WEBHOOK_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(WEBHOOK_COLUMNS))})")


def retry_policy(relay: RelayConfig) -> RetryPolicy:
    """The retry policy ``relay`` configures (defaults: `RelayConfig`'s)."""
    return RetryPolicy(relay.retry_initial, relay.retry_max, relay.max_age)


class Store:
    """The webhook table. Open with ``async with Store.open(path) as store``."""

    def __init__(self, path: Path, retry: RetryPolicy, busy_timeout: float,
                 write: sqlite3.Connection, read_dispatch: sqlite3.Connection,
                 read_status: sqlite3.Connection) -> None:
        self.path = path
        self.retry = retry
        self.busy_timeout = busy_timeout
        self._write_db = sqlite_utils.Database(write)
        self._read_dispatch = read_dispatch
        self._read_status = read_status
        self._write_lock = trio.CapacityLimiter(1)
        self._dispatch_lock = trio.CapacityLimiter(1)
        self._status_lock = trio.CapacityLimiter(1)
        self._pending: Counter[str] = Counter(queries.pending_by_endpoint(read_status))

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, retry: RetryPolicy | None = None,
                   busy_timeout: float = StoreConfig.busy_timeout) -> AsyncIterator[Store]:
        """Open (creating or migrating) the database at ``path``; closed on every way out.

        Raises `sqlite3.Error` (or `OSError` for the folder) if it cannot be opened; no
        connection is left open then.
        """
        retry = retry or retry_policy(RelayConfig())
        with ExitStack() as opened:
            def open_all() -> Store:
                path.parent.mkdir(parents=True, exist_ok=True)
                conns = []
                for _ in range(3):
                    conn = schema.connect(path, busy_timeout)
                    opened.callback(conn.close)
                    conns.append(conn)
                write = sqlite_utils.Database(conns[0])
                write.enable_wal()
                schema.migrate(write)
                return cls(path, retry, busy_timeout, *conns)

            store = await trio.to_thread.run_sync(open_all)
            try:
                yield store
            finally:
                with trio.CancelScope(shield=True):
                    # after the calls still running on worker threads, off the event loop
                    async with store._write_lock, store._dispatch_lock, store._status_lock:
                        await trio.to_thread.run_sync(opened.close)

    # -- writes ---------------------------------------------------------------

    async def insert_webhooks(self, webhooks: Sequence[NewWebhook]
                              ) -> list[StoredWebhook] | None:
        """Store ``webhooks`` in one committed transaction (group commit).

        Returns them as `next_pending` would read them back (with their seq), so the
        dispatcher can send them without a read; None if their seqs could not be told
        (then they are read back as usual).
        """
        rows = [_row(w) for w in webhooks]

        def insert() -> int | None:
            db = self._write_db
            with db.atomic():
                # one prepared statement for every row: sqlite-utils' insert_all builds
                # the SQL and converts each value in Python, which the ingest hot path
                # (and the GIL the event loop needs meanwhile) cannot afford
                db.conn.executemany(INSERT_WEBHOOK, [_values(row) for row in rows])
                return _first_seq(db.conn, rows)

        async with self._write_lock:
            first = await trio.to_thread.run_sync(insert)
            self._pending.update(w.endpoint_id for w in webhooks)
        if first is None:
            return None
        return [_stored(first + i, row) for i, row in enumerate(rows)]

    async def apply_acks(self, records: Sequence[AckRecord], now: float) -> list[AckOutcome]:
        """Apply a batch of acks in one transaction; return what each one did.

        Committed without an fsync of its own (``synchronous=NORMAL``): it survives a
        crash of relayd, and reaches the disk with the next webhook's commit (which fsyncs
        the log up to there) or checkpoint. A power loss before that loses the ack, which
        costs a redelivery, never a webhook; the fsync saved is most of an ack's cost.
        """
        def apply() -> list[AckOutcome]:
            conn = self._write_db.conn
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._write_db.atomic():
                    return acks.apply_acks(conn, records, now, self.retry)
            finally:
                conn.execute("PRAGMA synchronous=FULL")

        async with self._write_lock:
            outcomes = await trio.to_thread.run_sync(apply)
            self._pending.subtract(o.endpoint_id for o in outcomes
                                   if o.outcome in FINAL_OUTCOMES and o.endpoint_id is not None)
            return outcomes

    async def expire_pending(self, now: float, exclude: Iterable[str] = ()) -> list[str]:
        """Turn pending webhooks older than the max age into dead letters; return their ids."""
        skip = set(exclude)

        def expire() -> list[tuple[str, str]]:
            with self._write_db.atomic():
                return acks.expire_pending(self._write_db.conn, now, self.retry.max_age, skip)

        async with self._write_lock:
            expired = await trio.to_thread.run_sync(expire)
            self._pending.subtract(endpoint_id for _, endpoint_id in expired)
            return [webhook_id for webhook_id, _ in expired]

    async def check_writable(self, lock_timeout: float) -> None:
        """Take the database's write lock and let it go (``BEGIN IMMEDIATE; ROLLBACK``).

        Raises `sqlite3.Error` when another process holds the lock for ``lock_timeout``
        seconds or the file cannot be locked for writing. It first waits for the single
        writer's turn (a commit in progress): bound that wait at the call site.
        """
        def check() -> None:
            conn = self._write_db.conn
            conn.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

        async with self._write_lock:
            await trio.to_thread.run_sync(check)

    async def retry_webhook(self, webhook_id: str, now: float) -> Requeued | None:
        """Make ``webhook_id`` pending again, without backoff (see `requeue`).

        None if there is no such webhook or it is delivered.
        """
        def retry() -> Requeued | None:
            with self._write_db.atomic():
                return requeue.retry_one(self._write_db.conn, webhook_id, now)

        async with self._write_lock:
            done = await trio.to_thread.run_sync(retry)
        self._count_requeued([done] if done is not None else [])
        return done

    async def retry_endpoint(self, endpoint_id: str, statuses: Sequence[str], now: float,
                             on_chunk: Callable[[list[Requeued]], None]) -> int:
        """Retry every webhook of ``endpoint_id`` in ``statuses``; return how many.

        One transaction per `requeue.RETRY_CHUNK` webhooks (the writer is free in between);
        ``on_chunk`` gets each committed chunk, in seq order within a status.
        """
        total = 0
        for status in statuses:
            after = 0
            while True:
                def chunk(after_seq: int = after, status: str = status) -> list[Requeued]:
                    with self._write_db.atomic():
                        return requeue.retry_after(self._write_db.conn, endpoint_id, status,
                                                   after_seq, now)

                async with self._write_lock:
                    done = await trio.to_thread.run_sync(chunk)
                if not done:
                    break
                self._count_requeued(done)
                total += len(done)
                on_chunk(done)
                after = done[-1].seq
        return total

    async def replay(self, webhook_id: str, new_id: str, now: float) -> WebhookInfo | None:
        """Store a copy of ``webhook_id`` as the new webhook ``new_id``; None if no such one."""
        def replay() -> WebhookInfo | None:
            db = self._write_db
            with db.atomic():
                copy = requeue.replay_source(db.conn, webhook_id, new_id, now)
                if copy is None:
                    return None
                db.conn.execute(INSERT_WEBHOOK, _values(_row(copy)))
                return queries.webhook_info(db.conn, new_id)

        async with self._write_lock:
            copy = await trio.to_thread.run_sync(replay)
        if copy is not None:
            self._pending[copy.endpoint_id] += 1
        return copy

    def _count_requeued(self, requeued: Sequence[Requeued]) -> None:
        # a final webhook made pending again counts toward its endpoint's pending ones
        self._pending.update(w.endpoint_id for w in requeued if w.previous_status != PENDING)

    # -- reads ----------------------------------------------------------------

    def pending_count(self, endpoint_id: str) -> int:
        """Pending webhooks of ``endpoint_id`` (in memory: no query, see the module doc)."""
        return self._pending[endpoint_id]

    async def next_pending(
        self, wanted: Sequence[tuple[str, int, int]]
    ) -> dict[str, list[StoredWebhook]]:
        """For each ``(endpoint_id, after_seq, limit)``, the next pending rows in order.

        One thread hop for all endpoints; rows already handed out are skipped by ``after_seq``.
        """
        async with self._dispatch_lock:
            return await trio.to_thread.run_sync(queries.next_pending, self._read_dispatch,
                                                 wanted)

    async def counts(self) -> dict[str, object]:
        """Counts per status and the age basis of the oldest pending webhook."""
        async with self._status_lock:
            return await trio.to_thread.run_sync(queries.counts, self._read_status)

    async def get(self, webhook_id: str) -> dict[str, object] | None:
        """One webhook's row as a dict (status and tooling)."""
        async with self._status_lock:
            return await trio.to_thread.run_sync(queries.get, self._read_status, webhook_id)

    async def list_webhooks(self, *, status: str | None = None, endpoint_id: str | None = None,
                            before: int | None = None, limit: int) -> list[WebhookInfo]:
        """Up to ``limit`` webhooks below seq ``before``, newest first (`queries`)."""
        async with self._status_lock:
            return await trio.to_thread.run_sync(partial(
                queries.list_webhooks, self._read_status, status=status,
                endpoint_id=endpoint_id, before=before, limit=limit))

    async def webhook_info(self, webhook_id: str) -> WebhookInfo | None:
        async with self._status_lock:
            return await trio.to_thread.run_sync(queries.webhook_info, self._read_status,
                                                 webhook_id)

    async def webhook_detail(self, webhook_id: str) -> WebhookDetail | None:
        async with self._status_lock:
            return await trio.to_thread.run_sync(queries.webhook_detail, self._read_status,
                                                 webhook_id)

    async def endpoint_states(self, endpoint_ids: Sequence[str], now: float
                              ) -> dict[str, EndpointState]:
        """Counts, first pending, next retry, last delivery and last error per endpoint."""
        async with self._status_lock:
            return await trio.to_thread.run_sync(queries.endpoint_states, self._read_status,
                                                 endpoint_ids, now)

    async def pending_outside(self, endpoint_ids: Sequence[str]) -> dict[str, int]:
        """Pending counts for endpoints that are not in ``endpoint_ids`` (orphans)."""
        async with self._status_lock:
            return await trio.to_thread.run_sync(queries.pending_outside, self._read_status,
                                                 endpoint_ids)

    # -- retention (relayd.edge.retention) ------------------------------------

    async def delete_expired(self, cutoffs: Mapping[str, float], limit: int,
                             max_bytes: int) -> dict[str, int]:
        """Delete at most ``limit`` final webhooks (bodies of ``max_bytes`` in all, or one
        webhook) in one transaction; counts per status.

        ``cutoffs``: final status -> Unix time; its webhooks that became final at or before
        it go (`retention.delete_expired`; ``pending`` is refused with `ValueError`). The
        writer is held for this one transaction: a caller deleting more calls again.
        """
        def delete() -> dict[str, int]:
            with self._write_db.atomic():
                return retention.delete_expired(self._write_db.conn, cutoffs, limit,
                                                max_bytes)

        async with self._write_lock:
            return await trio.to_thread.run_sync(delete)

    async def reclaim_space(self, max_pages: int, spare: float) -> int:
        """Hand free pages beyond ``spare`` (a fraction of all pages), at most
        ``max_pages``, back to the file system in one transaction; return the bytes handed
        back (0: nothing left to do). A no-op on a database created without
        ``auto_vacuum=INCREMENTAL``."""
        async with self._write_lock:
            return await trio.to_thread.run_sync(retention.reclaim_space, self._write_db.conn,
                                                 max_pages, spare)

    async def space(self) -> retention.Space:
        """Page size, page and free page counts, and whether space can be handed back."""
        async with self._status_lock:
            return await trio.to_thread.run_sync(retention.space, self._read_status)


def _first_seq(conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> int | None:
    """The seq of the first of ``rows``, just inserted, if their seqs are consecutive in
    list order; None otherwise.

    SQLite gives each new row one more than the largest seq so far (AUTOINCREMENT) and
    nothing else writes inside our transaction, so they are; two indexed lookups (the
    first and the last row's id) confirm it rather than trusting it.
    """
    if not rows:
        return None
    seqs = [conn.execute("SELECT seq FROM webhooks WHERE id = ?", (rows[i]["id"],)).fetchone()
            for i in (0, -1)]
    if seqs[0] is None or seqs[1] is None or seqs[1][0] - seqs[0][0] != len(rows) - 1:
        return None
    return int(seqs[0][0])


def _stored(seq: int, row: Mapping[str, Any]) -> StoredWebhook:
    """The `StoredWebhook` that reading ``row`` (stored with ``seq``) would give."""
    return StoredWebhook(seq, row["id"], row["endpoint_id"], row["method"], row["headers"],
                         row["body"], row["received_at"], row["attempts"],
                         row["next_attempt_at"], row["envelope_head"], row["path"],
                         row["query"], row["remote_addr"])


def _values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """``row``'s values in `INSERT_WEBHOOK`'s order."""
    if len(row) != len(WEBHOOK_COLUMNS):
        raise ValueError(f"a webhook row has the columns {WEBHOOK_COLUMNS}, got {tuple(row)}")
    return tuple(row[column] for column in WEBHOOK_COLUMNS)


def _row(w: NewWebhook) -> dict[str, Any]:
    """The table row that stores ``w``."""
    return {
        "id": w.id,
        "endpoint_id": w.endpoint_id,
        "method": w.method,
        "headers": json.dumps(list(w.headers)),
        "body": w.body,
        "received_at": w.received_at,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": 0.0,
        "updated_at": w.received_at,
        "envelope_head": envelope_head(w.id, w.endpoint_id, w.received_at, w.headers,
                                       method=w.method, path=w.path, query=w.query,
                                       remote_addr=w.remote_addr),
        "path": w.path,
        "query": w.query,
        "remote_addr": w.remote_addr,
        "replay_of": w.replay_of,
    }
