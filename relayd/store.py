"""The durable webhook store: one SQLite file in WAL mode, reached through sqlite-utils.

Every call is an ``async`` method that runs its SQL on a worker thread
(`trio.to_thread.run_sync`), never on the event loop. All writes go through one write
connection guarded by a `trio.CapacityLimiter` of 1 (the single writer); the callers
batch (the ingest batcher and the ack writer each hand over many rows per transaction).
Reads use their own connections, which WAL lets run beside the writer.

Durability: ``synchronous=FULL``. Every commit is fsynced before the ingress answers 202,
so an acknowledged webhook survives a power loss, not just a process crash; group
commit keeps the fsync cost per batch, not per webhook.

In flight is not a database state: a webhook stays ``pending`` until its ack lands, and
the dispatcher keeps what it sent in memory. After a crash nothing is stuck "in flight".
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import sqlite_utils
import trio

from relayd.envelopes import envelope_head
from relayd.wire import SKIPPED_ERROR

__all__ = [
    "STATUSES",
    "AckOutcome",
    "AckRecord",
    "NewWebhook",
    "RetryPolicy",
    "Store",
    "StoredWebhook",
]

PENDING, DELIVERED, FAILED, DEAD_LETTER = "pending", "delivered", "failed", "dead_letter"
STATUSES = (PENDING, DELIVERED, FAILED, DEAD_LETTER)
SCHEMA_VERSION = 2
# Default seconds a connection waits on a lock held by another process before giving up
# (the ingress then answers 503).
BUSY_TIMEOUT_SECONDS = 5.0
# Longest error text kept per webhook.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class NewWebhook:
    """A webhook as the ingress received it, about to be stored."""

    id: str
    endpoint_id: str
    method: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    received_at: float


class StoredWebhook(NamedTuple):
    """A pending webhook read back for dispatch (a tuple: thousands are made per second)."""

    seq: int
    id: str
    endpoint_id: str
    method: str
    headers_json: str  # [[name, value], ...]; parsed only when needed (`headers`)
    body: bytes
    received_at: float
    attempts: int
    next_attempt_at: float
    # id, endpoint, arrival time and headers already serialized (relayd.envelopes);
    # None for a row written without it (by another program, or before schema 2).
    envelope_head: bytes | None = None

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return tuple((str(k), str(v)) for k, v in json.loads(self.headers_json))


class AckRecord(NamedTuple):
    """One DeliveryAck from the hub, as the ack writer applies it."""

    webhook_id: str
    success: bool
    status_code: int
    error_message: str
    permanent_failure: bool

    def is_skip(self) -> bool:
        """An ordered-pipeline hub skipped it (not an attempt, nothing to record)."""
        return (not self.success and not self.permanent_failure and self.status_code == 0
                and self.error_message == SKIPPED_ERROR)


Outcome = Literal["delivered", "failed", "retry", "dead_letter", "skipped", "ignored"]



class AckOutcome(NamedTuple):
    """What applying one ack did; ``endpoint_id`` is None for an unknown webhook."""

    webhook_id: str
    endpoint_id: str | None
    outcome: Outcome
    detail: str = ""
    next_attempt_at: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures, and the age that makes a dead letter."""

    initial: float = 1.0
    maximum: float = 3600.0
    max_age: float = 7 * 24 * 3600.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1 s, 2 s, 4 s, ... capped)."""
        return min(self.initial * 2.0 ** min(failures - 1, 62), self.maximum)


class Store:
    """The webhook table. Open with `Store.open` (off the event loop), close with `aclose`."""

    def __init__(self, path: Path, retry: RetryPolicy,
                 busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.retry = retry
        self.busy_timeout = busy_timeout
        self._write_db: sqlite_utils.Database | None = None
        self._read_dispatch: sqlite3.Connection | None = None
        self._read_status: sqlite3.Connection | None = None
        self._write_lock = trio.CapacityLimiter(1)
        self._dispatch_lock = trio.CapacityLimiter(1)
        self._status_lock = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path, retry: RetryPolicy = RetryPolicy(),
                   busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> Store:
        """Open (creating or migrating) the database at ``path``."""
        store = cls(path, retry, busy_timeout)
        await trio.to_thread.run_sync(store._open_sync)
        return store

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=self.busy_timeout)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_conn = self._connect()
        db = sqlite_utils.Database(write_conn)
        db.enable_wal()
        _migrate(db)
        self._write_db = db
        self._read_dispatch = self._connect()
        self._read_status = self._connect()

    async def aclose(self) -> None:
        def close() -> None:
            for conn in (self._read_dispatch, self._read_status):
                if conn is not None:
                    conn.close()
            if self._write_db is not None:
                self._write_db.conn.close()

        async with self._write_lock, self._dispatch_lock, self._status_lock:
            await trio.to_thread.run_sync(close)

    # -- writes ---------------------------------------------------------------

    async def insert_webhooks(self, webhooks: Sequence[NewWebhook]) -> None:
        """Store ``webhooks`` in one committed transaction (group commit)."""
        def insert() -> None:
            rows = [
                {
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
                    "envelope_head": envelope_head(w.id, w.endpoint_id, w.received_at,
                                                   w.headers),
                }
                for w in webhooks
            ]
            db = self._writer()
            with db.atomic():
                db["webhooks"].insert_all(rows, batch_size=len(rows) or 1)

        async with self._write_lock:
            await trio.to_thread.run_sync(insert)

    async def apply_acks(self, acks: Sequence[AckRecord], now: float) -> list[AckOutcome]:
        """Apply a batch of acks in one transaction; return what each one did."""

        def apply() -> list[AckOutcome]:
            db = self._writer()
            outcomes: list[AckOutcome] = []
            with db.atomic():
                # Acks are applied in order; each run of successes (the bulk) is one
                # statement per status code instead of a query and an update per ack.
                start = 0
                while start < len(acks):
                    end = start
                    while end < len(acks) and acks[end].success:
                        end += 1
                    if end > start:
                        outcomes += self._apply_successes(db.conn, acks[start:end], now)
                        start = end
                    else:
                        outcomes.append(self._apply_one(db.conn, acks[start], now))
                        start += 1
            return outcomes

        async with self._write_lock:
            return await trio.to_thread.run_sync(apply)

    def _apply_successes(self, conn: sqlite3.Connection, acks: Sequence[AckRecord],
                         now: float) -> list[AckOutcome]:
        by_code: dict[int, list[str]] = {}
        for ack in acks:
            by_code.setdefault(ack.status_code, []).append(ack.webhook_id)
        delivered: dict[str, str] = {}
        for code, ids in by_code.items():
            delivered.update(conn.execute(
                "UPDATE webhooks SET status = ?, delivered_at = ?, last_status_code = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE status = ? AND id IN "
                "(SELECT value FROM json_each(?)) RETURNING id, endpoint_id",
                (DELIVERED, now, code, now, PENDING, json.dumps(ids)),
            ).fetchall())
        outcomes = []
        for ack in acks:
            endpoint_id = delivered.pop(ack.webhook_id, None)
            if endpoint_id is not None:
                outcomes.append(AckOutcome(ack.webhook_id, endpoint_id, "delivered"))
            else:  # unknown, already final, or a second ack in this batch: say which
                outcomes.append(self._apply_one(conn, ack, now))
        return outcomes

    def _apply_one(self, conn: sqlite3.Connection, ack: AckRecord, now: float) -> AckOutcome:
        row = conn.execute(
            "SELECT endpoint_id, status, attempts, received_at FROM webhooks WHERE id = ?",
            (ack.webhook_id,),
        ).fetchone()
        if row is None:
            return AckOutcome(ack.webhook_id, None, "ignored", "unknown webhook id")
        endpoint_id, status, attempts, received_at = row
        if status != PENDING:
            return AckOutcome(ack.webhook_id, endpoint_id, "ignored", f"already {status}")
        if ack.is_skip():
            return AckOutcome(ack.webhook_id, endpoint_id, "skipped")
        error = ack.error_message[:MAX_ERROR_CHARS]
        if ack.success:
            conn.execute(
                "UPDATE webhooks SET status = ?, delivered_at = ?, last_status_code = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (DELIVERED, now, ack.status_code, now, ack.webhook_id),
            )
            return AckOutcome(ack.webhook_id, endpoint_id, "delivered")
        if ack.permanent_failure:
            conn.execute(
                "UPDATE webhooks SET status = ?, last_error = ?, last_status_code = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (FAILED, error, ack.status_code, now, ack.webhook_id),
            )
            return AckOutcome(ack.webhook_id, endpoint_id, "failed", error)
        failures = attempts + 1
        if now - received_at >= self.retry.max_age:
            conn.execute(
                "UPDATE webhooks SET status = ?, last_error = ?, last_status_code = ?, "
                "attempts = ?, updated_at = ? WHERE id = ?",
                (DEAD_LETTER, error, ack.status_code, failures, now, ack.webhook_id),
            )
            return AckOutcome(ack.webhook_id, endpoint_id, "dead_letter", error)
        next_at = now + self.retry.delay(failures)
        conn.execute(
            "UPDATE webhooks SET attempts = ?, next_attempt_at = ?, last_error = ?, "
            "last_status_code = ?, updated_at = ? WHERE id = ?",
            (failures, next_at, error, ack.status_code, now, ack.webhook_id),
        )
        return AckOutcome(ack.webhook_id, endpoint_id, "retry", error, next_at)

    async def expire_pending(self, now: float, exclude: Iterable[str] = ()) -> list[str]:
        """Turn pending webhooks older than the max age into dead letters; return their ids."""
        cutoff = now - self.retry.max_age
        skip = set(exclude)

        def expire() -> list[str]:
            db = self._writer()
            with db.atomic():
                ids = [
                    row[0]
                    for row in db.conn.execute(
                        "SELECT id FROM webhooks WHERE status = ? AND received_at <= ?",
                        (PENDING, cutoff),
                    )
                    if row[0] not in skip
                ]
                db.conn.executemany(
                    "UPDATE webhooks SET status = ?, last_error = ?, updated_at = ? "
                    "WHERE id = ? AND status = ?",
                    [(DEAD_LETTER, "expired undelivered", now, i, PENDING) for i in ids],
                )
            return ids

        async with self._write_lock:
            return await trio.to_thread.run_sync(expire)

    # -- reads ----------------------------------------------------------------

    async def next_pending(
        self, wanted: Sequence[tuple[str, int, int]]
    ) -> dict[str, list[StoredWebhook]]:
        """For each ``(endpoint_id, after_seq, limit)``, the next pending rows in order.

        One thread hop for all endpoints; rows already handed out are skipped by ``after_seq``.
        """

        def read() -> dict[str, list[StoredWebhook]]:
            conn = self._read_dispatch
            assert conn is not None
            result: dict[str, list[StoredWebhook]] = {}
            for endpoint_id, after_seq, limit in wanted:
                rows = conn.execute(
                    "SELECT seq, id, endpoint_id, method, headers, body, received_at, attempts, "
                    "next_attempt_at, envelope_head FROM webhooks "
                    "WHERE endpoint_id = ? AND status = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (endpoint_id, PENDING, after_seq, limit),
                ).fetchall()
                result[endpoint_id] = [_stored(row) for row in rows]
            return result

        async with self._dispatch_lock:
            return await trio.to_thread.run_sync(read)

    async def counts(self) -> dict[str, object]:
        """Counts per status and the age basis of the oldest pending webhook."""

        def read() -> dict[str, object]:
            conn = self._read_status
            assert conn is not None
            counts: dict[str, object] = dict.fromkeys(STATUSES, 0)
            for status, count in conn.execute(
                "SELECT status, COUNT(*) FROM webhooks GROUP BY status"
            ):
                counts[status] = count
            (oldest,) = conn.execute(
                "SELECT MIN(received_at) FROM webhooks WHERE status = ?", (PENDING,)
            ).fetchone()
            counts["oldest_pending_received_at"] = oldest
            return counts

        async with self._status_lock:
            return await trio.to_thread.run_sync(read)

    async def get(self, webhook_id: str) -> dict[str, object] | None:
        """One webhook's row as a dict (tests and tooling)."""

        def read() -> dict[str, object] | None:
            conn = self._read_status
            assert conn is not None
            cursor = conn.execute("SELECT * FROM webhooks WHERE id = ?", (webhook_id,))
            row = cursor.fetchone()
            if row is None:
                return None
            return dict(zip([d[0] for d in cursor.description], row, strict=True))

        async with self._status_lock:
            return await trio.to_thread.run_sync(read)

    async def pending_outside(self, endpoint_ids: Sequence[str]) -> dict[str, int]:
        """Pending counts for endpoints that are not in ``endpoint_ids`` (orphans)."""

        def read() -> dict[str, int]:
            conn = self._read_status
            assert conn is not None
            marks = ",".join("?" * len(endpoint_ids))
            return dict(
                conn.execute(
                    "SELECT endpoint_id, COUNT(*) FROM webhooks WHERE status = ? "
                    f"AND endpoint_id NOT IN ({marks}) GROUP BY endpoint_id",
                    (PENDING, *endpoint_ids),
                ).fetchall()
            )

        async with self._status_lock:
            return await trio.to_thread.run_sync(read)

    def _writer(self) -> sqlite_utils.Database:
        assert self._write_db is not None, "Store.open() first"
        return self._write_db


def _stored(row: tuple[object, ...]) -> StoredWebhook:
    seq, wid, endpoint_id, method, headers, body, received_at, attempts, next_at, head = row
    return StoredWebhook(
        seq=int(seq),  # type: ignore[call-overload]
        id=str(wid),
        endpoint_id=str(endpoint_id),
        method=str(method),
        headers_json=str(headers),
        body=bytes(body),  # type: ignore[arg-type]
        received_at=float(received_at),  # type: ignore[arg-type]
        attempts=int(attempts),  # type: ignore[call-overload]
        next_attempt_at=float(next_at),  # type: ignore[arg-type]
        envelope_head=head,  # type: ignore[arg-type]
    )


def _migrate(db: sqlite_utils.Database) -> None:
    """Create the schema, or upgrade it step by step using ``PRAGMA user_version``."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {version} is newer than this relayd ({SCHEMA_VERSION})"
        )
    if version < 1:
        with db.atomic():
            db.execute(
                """
                CREATE TABLE IF NOT EXISTS webhooks (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order
                    id TEXT NOT NULL UNIQUE,
                    endpoint_id TEXT NOT NULL,
                    method TEXT NOT NULL,
                    headers TEXT NOT NULL,                  -- JSON [[name, value], ...]
                    body BLOB NOT NULL,
                    received_at REAL NOT NULL,              -- Unix seconds
                    status TEXT NOT NULL CHECK (status IN
                        ('pending', 'delivered', 'failed', 'dead_letter')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at REAL NOT NULL DEFAULT 0,
                    last_error TEXT,
                    last_status_code INTEGER,
                    delivered_at REAL,
                    updated_at REAL NOT NULL
                )
                """
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS webhooks_pending_by_endpoint "
                "ON webhooks (endpoint_id, seq) WHERE status = 'pending'"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS webhooks_by_status ON webhooks (status, received_at)"
            )
            db.execute("PRAGMA user_version = 1")
    if version < 2:
        with db.atomic():
            db.execute("ALTER TABLE webhooks ADD COLUMN envelope_head BLOB")
            db.execute("PRAGMA user_version = 2")
